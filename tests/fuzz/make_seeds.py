#!/usr/bin/env python3
"""Remakes the fuzz seed corpora under tests/fuzz/TARGET/ from real outputs of headsurgeon.

usage: tests/fuzz/make_seeds.py BUILD_DIR   (a normal build: headsurgeon, make_random_checkpoint)

Runs diagnose, plan and a tiny repair of the golden tiny8 model, writes tiny checkpoints, and
trims the golden tokenizers to a few hundred merges (a seed the size of the whole file would
slow every execution). Multi-file inputs join their files with the separator of
fuzz/fuzz_common.h."""
import json, os, random, shutil, struct, subprocess, sys, tempfile

SEP = b"\n--8<--\n"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz")
GOLD = os.path.join(ROOT, "tests", "data", "golden")
build = os.path.abspath(sys.argv[1])
hs, mk = os.path.join(build, "headsurgeon"), os.path.join(build, "make_random_checkpoint")
tmp = tempfile.mkdtemp()


def run(*args):
    subprocess.run(args, check=True, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read(p):
    with open(os.path.join(tmp, p), "rb") as f:
        return f.read()


def seed(target, name, *parts):
    os.makedirs(os.path.join(OUT, target), exist_ok=True)
    with open(os.path.join(OUT, target, name), "wb") as f:
        f.write(SEP.join(parts))


def safetensors(tensors):  # name -> (dtype, shape, bytes), laid out in order, header padded to 8
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, (dt, shape, data) in tensors.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(d for _, _, d in tensors.values())


def tensors_of(blob):
    n = struct.unpack("<Q", blob[:8])[0]
    h = json.loads(blob[8:8 + n])
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], blob[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0])}


# safetensors: the tiny BLOOM of fuzz_safetensors.cpp's config in f16 and bf16, and in 2 shards.
for dt in ("f16", "bf16"):
    run(mk, "--shape", "custom", "--family", "bloom", "--hidden", "8", "--layers", "1", "--heads",
        "2", "--vocab", "16", "--dtype", dt, "-o", "ck_" + dt)
    seed("safetensors", "tiny_bloom_%s.safetensors" % dt, read("ck_%s/model.safetensors" % dt))
ts = tensors_of(read("ck_f16/model.safetensors"))
names = list(ts)
shards = [dict((k, ts[k]) for k in names[:len(names) // 2]), dict((k, ts[k]) for k in names[len(names) // 2:])]
index = {"metadata": {"total_size": sum(len(d) for _, _, d in ts.values())},
         "weight_map": {k: "s%d.safetensors" % (i + 1) for i, s in enumerate(shards) for k in s}}
os.makedirs(os.path.join(OUT, "config"), exist_ok=True)
seed("safetensors", "two_shards", json.dumps(index, indent=2).encode(), *[safetensors(s) for s in shards])

# config: the golden configs of every family and the demo model's.
for m in ("tiny8", "mpt8", "falconrw8"):
    shutil.copy(os.path.join(GOLD, "models", m, "config.json"), os.path.join(OUT, "config", m + ".json"))
shutil.copy(os.path.join(ROOT, "models", "demo", "config.json"), os.path.join(OUT, "config", "demo.json"))


# tokenizer: the golden tokenizers trimmed to their first merges (every byte kept).
def trim(src, merges):
    t = json.load(open(src, encoding="utf-8"))
    m = t["model"]
    keep = set(a["content"] for a in t["added_tokens"])
    moved = 0  # GPT-2's bytes_to_unicode: the byte-level alphabet, one character per byte
    for b in range(256):
        if ord("!") <= b <= ord("~") or 0xA1 <= b <= 0xAC or b >= 0xAE:
            keep.add(chr(b))
        else:
            keep.add(chr(256 + moved))
            moved += 1
    kept_merges = []
    for mg in m["merges"][:merges]:
        a, b = mg.split(" ") if isinstance(mg, str) else mg
        keep |= {a, b, a + b}
        kept_merges.append(mg)
    m["merges"] = kept_merges
    m["vocab"] = {k: v for k, v in m["vocab"].items() if k in keep}
    return json.dumps(t, ensure_ascii=False, indent=1).encode()


os.makedirs(os.path.join(OUT, "tokenizer"), exist_ok=True)
seed("tokenizer", "bloom_trimmed.json", trim(os.path.join(GOLD, "tokenizer", "tokenizer.json"), 300))
seed("tokenizer", "neox_trimmed.json", trim(os.path.join(GOLD, "tokenizer_neox", "tokenizer.json"), 300))

# encode and corpus: the golden tokenizer cases' texts, and a stretch of the demo corpus.
texts = [c["text"] for c in json.load(open(os.path.join(GOLD, "tokenizer", "cases.json"), encoding="utf-8"))]
for i, text in enumerate(texts[:24]):
    seed("encode", "case%02d.txt" % i, text.encode())
seed("encode", "composition.txt", "<|endoftext|>\u0338 e\u0301 \u1100\u1161\u11a8 <s>  \t x".encode())
corpus_dir = os.path.join(ROOT, "models", "demo", "corpus")
text = open(os.path.join(corpus_dir, sorted(os.listdir(corpus_dir))[0]), "rb").read()[:1500]
seed("corpus", "one_file.txt", text)
seed("corpus", "three_files", text[:600], b"", text[600:1200])

# diagnosis and plan: diagnose --json of golden tiny8 (one prompt) and mpt8 (two prompts, <s>);
# plans of the demo model's diagnosis in each mode.
run(hs, "diagnose", os.path.join(GOLD, "models", "tiny8"), "--json", "tiny8.json")
run(hs, "diagnose", os.path.join(GOLD, "models", "mpt8"), "--bos", "--prompt", "first prompt",
    "--prompt", "Second prompt, longer: caf\u00e9 \u226f \u4f60\u597d", "--json", "mpt8.json")
run(hs, "diagnose", os.path.join(ROOT, "models", "demo"), "--bos", "--json", "demo.json")
seed("diagnosis", "tiny8.json", read("tiny8.json"))
seed("diagnosis", "mpt8_two_prompts.json", read("mpt8.json"))
run(hs, "plan", "demo.json", "-o", "band.json")
run(hs, "plan", "demo.json", "--all-sick", "-o", "all.json")
run(hs, "plan", "demo.json", "--pass", "2", "--band", "9-15", "--extra-columns", "2", "-o", "p2.json")
for p in ("band", "all", "p2"):
    seed("plan", p + ".json", read(p + ".json"))

# state and trajectory: a tiny repair run of tiny8 (the plan and options fuzz_state.cpp uses).
random.seed(1)
words = "the cat sat on a mat while dogs ran far away from home and birds sang".split()
with open(os.path.join(tmp, "corpus.txt"), "w") as f:
    f.write(" ".join(random.choice(words) for _ in range(1500)) + " ")
with open(os.path.join(tmp, "plan_in.json"), "w") as f:
    f.write('{"targets": {"0": [7]}, "frozen_watch": {"0": [6]}}')
run(hs, "repair", os.path.join(GOLD, "models", "tiny8"), "--plan", "plan_in.json", "--corpus",
    "corpus.txt", "-o", "run", "--seq", "32", "--accum", "4", "--eval-every", "1", "--gen-tokens",
    "4", "-q", "--lr", "1e-2", "--epochs", "2", "--threads", "1")
seed("state", "state", read("run/state/state.json"), read("run/state/state.safetensors"))
seed("state", "state_json_only", read("run/state/state.json"))
files = ["config.json", "plan.json", "trajectory.json", "diagnosis_before.json",
         "diagnoses/step-19.json", "diagnoses/step-38.json"]
seed("trajectory", "run", *[read("run/" + f) for f in files])
seed("trajectory", "run_without_diagnoses", *[read("run/" + f) for f in files[:3]])
shutil.rmtree(tmp)
