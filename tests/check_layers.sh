#!/usr/bin/env bash
# The include graph of src/ against the layering of CMakeLists.txt: each folder may include only
# itself and the folders its library links (directly or through them). Header-only includes do
# not fail to link, so this test is what keeps them honest. Prints every violation; exit 1 on any.
set -euo pipefail
src=${1:-$(dirname "$0")/../src}

# Direct dependencies, as the libraries link (one library per folder).
declare -A deps=(
  [util]=""
  [io]="util"
  [text]="util"
  [ops]="util"
  [ops/cpu]="ops"
  [cuda]="util"
  [ops/cuda]="ops cuda"
  [model]="io ops"
  [engine]="model"
  [engine/cpu]="engine ops/cpu"
  [engine/cuda]="engine ops/cuda"
  [backend]="engine/cpu engine/cuda"
  [eval]="engine/cpu"
  [diagnose]="eval text"
  [surgery]="diagnose backend"
  [pretrain]="surgery"
  [demo]="surgery"
  [report]="surgery"
  [hub]="io"
  [cli]="backend report demo pretrain hub"
)

closure() {  # every folder reachable from $1 (itself included)
  local -A seen=()
  local stack=("$1")
  while ((${#stack[@]})); do
    local f=${stack[-1]}
    unset 'stack[-1]'
    [[ -n ${seen[$f]:-} ]] && continue
    seen[$f]=1
    for d in ${deps[$f]}; do stack+=("$d"); done
  done
  echo "${!seen[@]}"
}

bad=0
for folder in "${!deps[@]}"; do
  [[ -d $src/$folder ]] || continue
  allowed=" $(closure "$folder") "
  while IFS= read -r line; do
    file=${line%%:*}
    inc=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"${line#*:}")
    target=$(dirname "$inc")
    if [[ $allowed != *" $target "* ]]; then
      echo "layering: $file includes \"$inc\" ($folder may not use $target)"
      bad=1
    fi
  done < <(grep -H '#include "' "$src/$folder"/*.* 2>/dev/null || true)
done
exit $bad
