# The long-input diagnosis anchor of the tensor-core attention issue: Hugging Face transformers
# running the diagnosis forward of bloom-1b7 (eager attention with output_attentions, bf16,
# random weights with the real config) at each T given, computing bos mass and entropy per head
# as hf_anchor.py does at T = 60: median of 3 after 1 warm-up, and the peak GPU memory. A length
# that runs out of memory prints "oom". One JSON line per T. Run by bench/gpu_run.sh.
import json, statistics, sys, time
import torch
from transformers import BloomConfig, BloomForCausalLM

c = BloomConfig(vocab_size=250880, hidden_size=2048, n_layer=24, n_head=16)
c._attn_implementation = "eager"
torch.manual_seed(0)
with torch.device("cuda"):
    m = BloomForCausalLM(c).to(torch.bfloat16).eval()

def diag(ids):
    with torch.no_grad():
        out = m.transformer(input_ids=ids, output_attentions=True)
        st = []
        for a in out.attentions:
            a = a[0].float()
            bos = a[:, :, 0].mean(-1)
            ent = -(a.clamp(min=1e-10) * a.clamp(min=1e-10).log()).sum(-1).mean(-1)
            st.append(torch.stack([bos, ent]))
        return torch.stack(st).cpu()

for T in [int(x) for x in sys.argv[1:]] or [8192]:
    ids = torch.randint(5, 250000, (1, T), device="cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        diag(ids)
        ts = []
        for _ in range(3):
            torch.cuda.synchronize()
            s = time.perf_counter()
            diag(ids)
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - s)
        r = {"ms": statistics.median(ts) * 1e3,
             "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    except torch.OutOfMemoryError:
        r = {"oom": True}
    print(json.dumps({"what": "hf_diag", "model": "bloom-1b7", "T": T, **r}), flush=True)
