#!/usr/bin/env bash
# The real-data runs behind results/LEADERBOARD.md: the `cpu` profile (2048 steps, batch 16, 95k-weight CNN,
# m = 0.99) on the embedded digits (real scanned digits, no download), the reference protocol, 3 seeds.
# Each command is a one-training `sweep` into the committed results/: it skips a finished run, resumes an
# unfinished one and starts one that is missing (`run --resume` refuses when there is nothing to resume), so a
# lane can be re-run after an interruption.
# Two lanes of about equal cost, to run side by side on 2 cores:  scripts/cpu_runs.sh lane1 & scripts/cpu_runs.sh lane2
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
run() { python run_bench.py sweep --profile cpu --dataset digits --results-dir results --no-progress "$@"; }
SEEDS="0 1 2"
# FixMatch at 20 labels: one training per seed serves 20 teachers: none, tma, and SE/STS at every granularity
# and p in {0.3, 0.5, 0.7} (the paper's Table 4 idea, and the tma/sts rows of the main table).
fixmatch_ablation() { for s in $SEEDS; do run --alg fixmatch --labels 20 --seed "$s" --smooth none,tma,se,sts \
  --granularity layer,channel,neuron --p 0.3,0.5,0.7; done; }
# FixMatch tma alone, to check on real data that a shared training equals the separate run, number for number.
fixmatch_separate() { for s in $SEEDS; do run --alg fixmatch --labels 20 --seed "$s" --smooth tma; done; }
# Every algorithm at 20 labels; student-target algorithms serve tma and sts from one training, Mean Teacher
# (targets from the teacher) trains per strategy.
alg() { for s in $SEEDS; do run --alg "$1" --labels "${2:-20}" --seed "$s" --smooth "${3:-tma,sts}"; done; }
case "${1:-}" in
  lane1) fixmatch_ablation; alg uda; alg mixmatch; fixmatch_separate ;;
  lane2) alg fixmatch 40 none,tma,se,sts; alg supervised; alg supervised 40; alg supervised 1442 tma,sts; alg remixmatch
         alg mean_teacher 20 tma; alg pi_model; alg pseudo_label ;;
  *) echo "usage: $0 {lane1|lane2}" >&2; exit 2 ;;
esac
