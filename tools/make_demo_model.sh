#!/usr/bin/env bash
# Regenerates the built-in demo model models/demo (docs/demo-model.md): a 6-layer BLOOM trained
# from scratch by `headsurgeon pretrain` on Python's standard library, with the heads listed in
# tools/demo_collapse.json driven onto the first token during pretraining (induced collapse).
#
#   tools/make_demo_model.sh [OUT_DIR]      (default models/demo; about 15 minutes on 2 cores)
#
# The corpus is the top-level modules of the running python3's standard library (the committed
# model was made from CPython 3.11.7's), split by sorted index: i % 12 == 5 -> the repair
# corpus shipped in the model folder, i % 12 == 11 -> the held-out lines, the rest -> pretraining.
# Same Python version, seed and thread count -> the same bytes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/models/demo}
hs=${HS:-$here/build/headsurgeon}
stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/pretrain" "$work/corpus"

i=0
for f in $(ls "$stdlib"/*.py | LC_ALL=C sort); do
  case $((i % 12)) in
    5) cp "$f" "$work/corpus/" ;;
    11) cp "$f" "$work/heldout-src-$(basename "$f")" ;;
    *) cp "$f" "$work/pretrain/" ;;
  esac
  i=$((i + 1))
done
# Held-out prompts: 3 substantial code lines from each held-out module (40 characters or more,
# not comments), leading indentation removed.
for f in "$work"/heldout-src-*; do
  { grep -E '^\s*[A-Za-z_].{39,}$' "$f" | sed -E 's/^\s+//' | head -3; } || true
done > "$work/heldout.txt"

"$hs" --threads 2 pretrain --corpus "$work/pretrain" -o "$work/model" \
  --vocab 2048 --layers 6 --hidden 128 --heads 16 --seq 128 --batch 16 --steps 700 \
  --lr 3e-3 --warmup 50 --weight-decay 0.1 --seed 0 --bos \
  --collapse "$here/tools/demo_collapse.json" --collapse-strength 0.5 --eval-every 50

rm -rf "$out.new"
cp -r "$work/model" "$out.new"
cp -r "$work/corpus" "$out.new/corpus"
cp "$work/heldout.txt" "$out.new/heldout.txt"
cp "$stdlib/LICENSE.txt" "$out.new/LICENSE-corpus-PSF.txt"
python3 --version > "$out.new/python-version.txt"
rm -rf "$out" && mv "$out.new" "$out"
echo "wrote $out"
