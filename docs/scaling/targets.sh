#!/usr/bin/env bash
# The rows of docs/SCALING.md's "Compiled by XLA:TPU and XLA:GPU": one process (one
# compiled step) per row, compiled for compile-only TPU / GPU devices on this machine
# (tokendrift_jax/perf/targets.py), appended to docs/scaling/targets.jsonl. Run from the
# repository root with the dev requirements installed (libtpu, jax-cuda12-plugin/pjrt, nvcc).
set -u
out=${1:-docs/scaling/targets.jsonl}
run() { python launch/plan_memory.py --out="$out" "$@" || echo "failed: $*" >&2; }
# The 170M MDLM steps as shipped (no remat), one sequence per device, L = 1024; XLA:CPU's
# plan of the same step beside them.
for target in tpu:v5p-16 gpu:h100x8 cpu:8; do
  run --config=configs/mdlm_drift.py --target=$target --mesh=8,1,1 --micro-batch=1 --length=1024 --no-remat
  run --config=configs/mdlm_continuation.py --target=$target --mesh=8,1,1 --micro-batch=1 --length=1024 --no-remat
done
# The 8B LLaDA TokenDrift step at the paper's micro-batch (8 sequences per micro-step: 4 per
# batch shard of (1, 2, 4)), remat on, L = 1024, on 8 H100s and on 8 v5p chips.
for target in gpu:h100x8 tpu:v5p-16; do
  run --config=configs/llada_drift.py --target=$target --mesh=1,2,4 --micro-batch=4 --length=1024 --remat
done
# L = 4096 at the paper's 8 sequences per micro-step (2 per batch shard of (1, 4, 4)) on
# 16 H100s (two hosts of 8).
run --config=configs/llada_drift.py --target=gpu:h100x16 --mesh=1,4,4 --micro-batch=2 --length=4096 --remat
