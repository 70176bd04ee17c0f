#!/usr/bin/env bash
# The real-data runs quoted in the README and committed under results/: the `cpu` profile on the
# CIFAR-10 subset (../shared/data). Each line is an ordinary run; --resume skips finished ones, so the
# script can be re-run after an interruption (never two copies on the same group at once).
# Usage: scripts/cpu_runs.sh {fixmatch-tma-none|fixmatch-se-sts[-40|-250]|others|grid ALG SMOOTH LABELS SEED...}
set -euo pipefail
cd "$(dirname "$0")/.."
export SSL_BENCH_DATA="${SSL_BENCH_DATA:-$(pwd)/../shared/data}" OMP_NUM_THREADS=1
run() { python run_bench.py --profile cpu --dataset cifar10_subset --resume --no-progress "$@"; }
case "${1:-}" in
  fixmatch-tma-none)
    for labels in 40 250; do for smooth in tma none; do for seed in 0 1 2; do
      run --alg fixmatch --smooth "$smooth" --labels "$labels" --seed "$seed"; done; done; done ;;
  fixmatch-se-sts)
    for labels in 40 250; do for smooth in sts se; do for seed in 0 1 2; do
      run --alg fixmatch --smooth "$smooth" --labels "$labels" --seed "$seed"; done; done; done ;;
  fixmatch-se-sts-40|fixmatch-se-sts-250)
    labels="${1##*-}"
    for smooth in sts se; do for seed in 0 1 2; do
      run --alg fixmatch --smooth "$smooth" --labels "$labels" --seed "$seed"; done; done ;;
  others)
    for alg in mean_teacher pi_model pseudo_label uda mixmatch remixmatch; do
      run --alg "$alg" --smooth tma --labels 250 --seed 0; done ;;
  grid)   # grid ALG SMOOTH LABELS SEED...: one cell, several seeds
    alg="$2" smooth="$3" labels="$4"; shift 4
    for seed in "$@"; do run --alg "$alg" --smooth "$smooth" --labels "$labels" --seed "$seed"; done ;;
  *) echo "usage: $0 {fixmatch-tma-none|fixmatch-se-sts[-40|-250]|others|grid ALG SMOOTH LABELS SEED...}" >&2; exit 2 ;;
esac
