#!/usr/bin/env bash
# Keeps a GPU call's copy of the project within the `run` tool's 64 MiB (the working tree as git sees it, plus the
# carried .gpu-bundle/, about 32 MB): the released weights are tracked files (22.4 MB for each ResNet18), and a
# call needs only those of the notebooks it runs, whose release step compares the new run with the file it would
# replace. From the project root:
#   bash tools/gpu-weights.sh hold NOTEBOOK...  # every other weights/*.safetensors to $HELD; prints the copy's size
#   bash tools/gpu-weights.sh restore           # puts them back; a file a call has since released is kept
# The run records of a call made with files held name their commit "-dirty".
set -euo pipefail
HELD=${HELD:-/tmp/gpu-held-weights}
limit=$((64 * 1024 * 1024))

copy_bytes() {  # what the run tool sends: tracked files present, untracked files not ignored, and .gpu-bundle/
  { git ls-files -z; git ls-files -z --others --exclude-standard; } | { xargs -0 -r stat -c %s -- 2>/dev/null || true; } |
    awk '{s += $1} END {print s + 0}'
  du -sb .gpu-bundle 2>/dev/null | cut -f1 || echo 0
}

restore() {  # the held files back into weights/, except where a call has since released a newer one
  for f in "$HELD"/*.safetensors; do
    [ -e "$f" ] || continue
    target=weights/$(basename "$f")
    if [ -e "$target" ] && ! cmp -s "$f" "$target"; then
      echo "kept the newer $target (released by a call); dropped the held one"; rm "$f"
    else
      mv "$f" "$target"; echo "restored: $target"
    fi
  done
}

case ${1:-} in
  hold)
    shift
    restore > /dev/null  # what an earlier hold left out
    mkdir -p "$HELD"
    for f in weights/*.safetensors; do
      [ -e "$f" ] || continue
      name=$(basename "$f" .safetensors)
      keep=0
      for nb in "$@"; do [ "$(basename "$nb" .ipynb)" = "$name" ] && keep=1; done
      if [ $keep = 0 ]; then mv "$f" "$HELD/"; echo "held: $f"; fi
    done
    total=$(copy_bytes | awk '{s += $1} END {print s}')
    echo "the call's copy: $((total / 1024 / 1024)) MiB of 64 (tree and .gpu-bundle/)"
    [ "$total" -le "$limit" ] || { echo "over the limit: hold more, or run fewer notebooks in this call" >&2; exit 1; }
    ;;
  restore) restore ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
