#!/usr/bin/env bash
# One call on a lent GPU machine (docs/offline-machines.md), from the project root, with .gpu-bundle/ carried
# (`make gpu-bundle`): the runner's setup, then any of: the five notebooks' smoke runs side by side on CUDA, a
# benchmark, full runs (resumed from the machine's checkpoints/ when a call cut them), and seeds of one notebook.
#   bash tools/gpu-call.sh [--smoke SECONDS] [--bench SECONDS "BENCH ARGS"] [--seeds NOTEBOOK "1 2 3 4"] \
#                          --until SECONDS [NOTEBOOK...]
# --until: the full runs and seeds end that many seconds after the call's start (the runner keeps 20 s to pack).
# Brings back under $OUT: smoke.tgz, bench.log, full/gpu-results.tgz (executed notebooks, results/, logs),
# seeds-<k>.tgz, and release/NAME.safetensors.part-* for each file a finished run released (join with cat).
set -uo pipefail
smoke_s=0; bench_s=0; bench_args=""; seeds_nb=""; seeds=""; until_s=""
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke_s=$2; shift 2 ;;
    --bench) bench_s=$2; bench_args=$3; shift 3 ;;
    --seeds) seeds_nb=$2; seeds=$3; shift 3 ;;
    --until) until_s=$2; shift 2 ;;
    *) break ;;
  esac
done
[ -n "$until_s" ] && [ -n "${OUT:-}" ] || { echo "usage: see the header of $0 (and \$OUT must be set)" >&2; exit 2; }
t0=$(date +%s); stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
left() { echo $(( until_s - ($(date +%s) - t0) )); }
# Checkpoints in the copy of the project: the runner returns weights from there, and a later call on the same
# machine resumes a run this one cut off.
export CHECKPOINT_DIR=$PWD/checkpoints
touch /tmp/gpu-call-began
stamp setup; bash .gpu-bundle/run.sh /tmp/gpu-setup 60 > /tmp/gpu-setup.log 2>&1; grep -E "^torch|installed|written" /tmp/gpu-setup.log
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader 2>&1
if [ "$smoke_s" -gt 0 ]; then
  stamp "smoke runs of every notebook on CUDA, side by side (${smoke_s}s)"
  for nb in notebooks/0*.ipynb; do
    SMOKE=1 PAPERMILL_ARGS="-p DEVICE cuda" bash .gpu-bundle/run.sh /tmp/gpu-smoke/$(basename $nb .ipynb) \
      "$smoke_s" $nb > /tmp/gpu-smoke-$(basename $nb .ipynb).log 2>&1 &
  done; wait
  for log in /tmp/gpu-smoke-*.log; do echo "   $(basename $log .log): $(grep -m1 -E '^   exit' $log)"; done
  mkdir -p /tmp/gpu-smoke-logs && cp /tmp/gpu-smoke-*.log /tmp/gpu-smoke-logs/
  for d in /tmp/gpu-smoke/*; do cp $d/gpu-results.tgz /tmp/gpu-smoke-logs/$(basename $d).tgz; done
  tar -C /tmp -czf $OUT/smoke.tgz gpu-smoke-logs
fi
if [ "$bench_s" -gt 0 ]; then
  stamp "python -m helpers.bench $bench_args (${bench_s}s)"
  (export PYTHONPATH=/tmp/site:$PWD CIFAR10_ROOT=/tmp/cifar10 MPLBACKEND=Agg PYTHONUNBUFFERED=1
   timeout "$bench_s" ${PYTHON:-python3} -m helpers.bench $bench_args 2>&1 | tee $OUT/bench.log | grep -v "^|" | tail -8)
  cp results/bench_*.md $OUT/ 2>/dev/null
fi
if [ $# -gt 0 ]; then
  stamp "full runs ($(left)s): $*"
  bash .gpu-bundle/run.sh $OUT/full "$(left)" "$@"
fi
for k in $seeds; do
  [ "$(left)" -gt 60 ] || { stamp "seed $k skipped (time spent)"; continue; }
  stamp "$seeds_nb, seed $k ($(left)s)"
  PAPERMILL_ARGS="-p SEED $k -p CHECKPOINT $CHECKPOINT_DIR/$(basename $seeds_nb .ipynb)_seed$k.pt" \
    bash .gpu-bundle/run.sh /tmp/gpu-seed-$k "$(left)" "$seeds_nb" | grep -E "^   (exit|Test|[0-9]+ epochs)"
  cp /tmp/gpu-seed-$k/gpu-results.tgz $OUT/seeds-$k.tgz
done
rm -rf $OUT/full/weights  # the runner's .pt copies: the released safetensors below are what the project keeps
mkdir -p $OUT/release
for f in $(find weights -name '*.safetensors' -newer /tmp/gpu-call-began); do
  split -b 15m "$f" "$OUT/release/${f##*/}.part-"
done
ls -R $OUT | head -30; stamp done
