# The perplexity anchor issue 4 asks for ("measure it too"): Hugging Face transformers scoring
# 8 sequences of 512 tokens with labels (eager attention, bf16, random weights with the real
# BLOOM config), as hf_anchor.py times its other work: median of 5 after 2 warm-ups.
# Run on the GPU machine by bench/gpu_run.sh; prints one JSON line.
import json, statistics, sys, time
import torch
from transformers import BloomConfig, BloomForCausalLM

SHAPES = {"bloom-560m": (1024, 24, 16), "bloom-1b7": (2048, 24, 16), "bloom-7b1": (4096, 30, 32)}
name = sys.argv[1] if len(sys.argv) > 1 else "bloom-1b7"
batch, length = 8, 512
d, L, H = SHAPES[name]
c = BloomConfig(vocab_size=250880, hidden_size=d, n_layer=L, n_head=H)
c._attn_implementation = "eager"
torch.manual_seed(0)
with torch.device("cuda"):
    m = BloomForCausalLM(c).to(torch.bfloat16).eval()
ids = torch.randint(5, 250000, (batch, length), device="cuda")

def score():
    with torch.no_grad():
        return m(input_ids=ids, labels=ids).loss.item()

for _ in range(2):
    score()
ts = []
for _ in range(5):
    torch.cuda.synchronize()
    s = time.perf_counter()
    score()
    torch.cuda.synchronize()
    ts.append(time.perf_counter() - s)
med = statistics.median(ts)
print(json.dumps({"what": "hf_ppl", "model": name, "tokens": batch * length,
                  "tok_s": batch * length / med}), flush=True)
