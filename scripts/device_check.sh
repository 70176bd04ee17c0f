#!/usr/bin/env bash
# The device check: the one command whoever gets a GPU runs (and nothing else), at most 10 minutes on one GPU.
#
#   scripts/device_check.sh                 # on a CUDA GPU; everything goes to benchmarks/results/device_check-<gpu>-<utc>/
#   scripts/device_check.sh --dry-run       # on the CPU: every command at a tiny budget, under a minute (CI runs it)
#   scripts/device_check.sh --out DIR       # write somewhere else
#
# Steps, in this order (cheapest and most asked-for first), each logged to its own file; a failing step is
# recorded in summary.txt and the next one still runs:
#   1. environment    nvidia-smi, torch / CUDA / cuDNN versions, the commit
#   2. cuda tests     pytest -m cuda: the CUDA-only tests, among them the sync check of training steps under
#                     torch.cuda.set_sync_debug_mode("error") (tests/test_step_sync.py)           ~1 min
#   3. gpu report     benchmarks/gpu_report.py, every section and case, --budget-s 210 (what does not fit
#                     is skipped and named in its JSON; killed at 300 s, its JSON keeps what it measured)  ~4 min
#   3b. cuda graphs   the fp32 and bf16 step cases of WRN-28-2 again with --cuda-graphs (killed at 90 s)  ~1 min
#   4. fixmatch vs supervised on cifar10_subset (the real CIFAR-10 images in ../shared/data), WRN-28-2, the
#                     reference protocol shortened to 6144 steps, 250 labels, seed 0, same split  ~3-4 min
#                     (FixMatch's 960-image step is projected at 15-20 ms eager fp32 on an H100-class GPU:
#                     ~2 min; supervised's 64-image step a few ms: < 1 min; each arm is stopped with Ctrl-C
#                     at 240 s if slower, which records it as interrupted and resumable with --resume)
# Commit the output folder (JSON, tables, the runs' records) and quote summary.txt in the issue.
set -uo pipefail
cd "$(dirname "$0")/.."

dry_run=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$1'; expected --dry-run or --out DIR" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
export SSL_BENCH_DATA=${SSL_BENCH_DATA:-$(cd .. && pwd)/shared/data}
if [ ! -f "$SSL_BENCH_DATA/cifar10_subset.npz" ]; then
  echo "device_check.sh: no cifar10_subset.npz in SSL_BENCH_DATA=$SSL_BENCH_DATA; set SSL_BENCH_DATA to the folder that holds it" >&2
  exit 2
fi

if [ "$dry_run" = 1 ]; then
  device=cpu
  stamp=dryrun
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "device_check.sh: no CUDA device visible to torch; on a CPU run it with --dry-run" >&2
    exit 2
  fi
  device=cuda
  stamp="$("$PY" -c "import re, torch; print(re.sub(r'[^A-Za-z0-9]+', '-', torch.cuda.get_device_name(0)).strip('-'))")-$(date -u +%Y%m%dT%H%M%SZ)"
fi
out=${out:-benchmarks/results/device_check-$stamp}
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"

step() {   # step NAME COMMAND...: run, log to $out/NAME.log, record the exit status and duration
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*" | tee -a "$summary"
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s (log: $out/$name.log)" | tee -a "$summary"
  tail -n 3 "$out/$name.log" | sed 's/^/   | /' | tee -a "$summary"
}

# 1. environment
step environment "$PY" -c "
import subprocess, sys, torch
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda,
      '| cudnn', torch.backends.cudnn.version())
if torch.cuda.is_available():
    print('gpu', torch.cuda.get_device_name(0), '|', torch.cuda.get_device_properties(0).total_memory // 2**20, 'MiB')
    print(subprocess.run(['nvidia-smi'], capture_output=True, text=True).stdout)
print('commit', subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip())
"

# 2. the CUDA-only tests (skipped on the CPU: the dry run checks the command and the collection)
step cuda_tests "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider tests

# 3. the GPU report: every section and case
if [ "$dry_run" = 1 ]; then
  step gpu_report "$PY" benchmarks/gpu_report.py --device cpu --quick --budget-s 30 --out "$out/gpu_report.json"
else
  step gpu_report timeout 300 "$PY" benchmarks/gpu_report.py --device cuda --budget-s 210 --out "$out/gpu_report.json"
fi
# 3b. the step cases again with --cuda-graphs (3 eager steps, then replays of one captured graph; the first run
#     of ssl_bench/run/cuda_graphs.py on a GPU), WRN-28-2 only: their steps/s beside the eager ones above
if [ "$dry_run" = 1 ]; then
  echo "(dry run: --cuda-graphs needs CUDA; its CPU refusal is tests/test_cuda_graphs.py)"
else
  step gpu_report_cuda_graphs timeout 90 "$PY" benchmarks/gpu_report.py --device cuda --cuda-graphs --budget-s 45 \
    --models wrn28_2 --sections steps --cases fp32,amp --case-s 5 --out "$out/gpu_report_cuda_graphs.json"
fi

# 4. FixMatch vs the supervised baseline on the real CIFAR-10 subset, same split and seed
runs="$out/runs"
if [ "$dry_run" = 1 ]; then
  budget=(--profile smoke --device cpu)
else
  budget=(--profile full --steps 6144 --eval-every 512 --device cuda)
fi
for alg in fixmatch supervised; do
  step "train_$alg" timeout --signal=INT 240 "$PY" run_bench.py --alg "$alg" --dataset cifar10_subset --labels 250 --seed 0 --smooth tma \
    "${budget[@]}" --results-dir "$runs" --no-progress
done
step leaderboard "$PY" run_bench.py leaderboard --results-dir "$runs" --no-write

failed=$(grep -c "^   exit [1-9]" "$summary")
echo "device_check: $failed failed step(s); everything is in $out" | tee -a "$summary"
[ "$failed" = 0 ]
