# HF anchor of surgical training for bloom-7b1 (bench/gpu_run.sh, beside bench_surgery): the
# pass-1-shaped plan (heads 17-31 of layers 5-25) trained the way the paper's scripts do it with
# PyTorch + transformers: bf16 model, gradient masks on the target rows/columns, AdamW over the
# masked tensors, 8 micro-steps of 1 x 512 tokens per optimizer step. Prints one JSON line.
import json, statistics, sys, time

import torch
from transformers import BloomConfig, BloomForCausalLM

name = sys.argv[1] if len(sys.argv) > 1 else "bloom-7b1"
shapes = {"bloom-7b1": dict(hidden_size=4096, n_layer=30, n_head=32),
          "bloom-1b7": dict(hidden_size=2048, n_layer=24, n_head=16)}
plan = {l: list(range(17, 32)) for l in range(5, 26)} if name == "bloom-7b1" else {}
cfg = BloomConfig(vocab_size=250880, **shapes[name])
cfg._attn_implementation = "eager"
torch.manual_seed(0)
with torch.device("cuda"):
    m = BloomForCausalLM(cfg).to(torch.bfloat16)
m.train()
for p in m.parameters():
    p.requires_grad = False
d, H = cfg.hidden_size, cfg.n_head
hd = d // H
params = []
for layer, heads in plan.items():
    at = m.transformer.h[layer].self_attention
    rows = torch.zeros(3 * d, device="cuda")
    cols = torch.zeros(d, device="cuda")
    for h in heads:
        torch.nn.init.xavier_normal_(at.query_key_value.weight.data[h * 3 * hd:(h + 1) * 3 * hd])
        at.query_key_value.bias.data[h * 3 * hd:(h + 1) * 3 * hd] = 0
        at.dense.weight.data[:, h * hd:(h + 1) * hd] = 0
        rows[h * 3 * hd:(h + 1) * 3 * hd] = 1
        cols[h * hd:(h + 1) * hd] = 1
    for t in (at.query_key_value.weight, at.query_key_value.bias, at.dense.weight):
        t.requires_grad = True
        params.append(t)
    at.query_key_value.weight.register_hook(lambda g, r=rows: g * r.unsqueeze(1).to(g.dtype))
    at.query_key_value.bias.register_hook(lambda g, r=rows: g * r.to(g.dtype))
    at.dense.weight.register_hook(lambda g, c=cols: g * c.unsqueeze(0).to(g.dtype))
opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.0)
x = torch.randint(5, 250000, (1, 512), device="cuda")


def step():
    for _ in range(8):
        out = m(input_ids=x, labels=x, use_cache=False)
        (out.loss / 8).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad()


step()
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats()
times = []
for _ in range(2):
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
med = statistics.median(times)
print(json.dumps({"what": "hf_train", "model": name, "tok_s": 8 * 512 / med,
                  "step_ms": med * 1e3, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}))
