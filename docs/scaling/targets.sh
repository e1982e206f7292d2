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
# v6e and H200: the 170M MDLM steps as above and the 8B TokenDrift step on (1, 2, 4), 4 per
# batch shard (8 sequences per micro-step), as the v5p / H100 rows.
for target in tpu:v6e-8 gpu:h200x8; do
  run --config=configs/llada_drift.py --target=$target --mesh=1,2,4 --micro-batch=4 --length=1024 --remat
done
for target in gpu:h200x8 tpu:v6e-8; do
  run --config=configs/mdlm_drift.py --target=$target --mesh=8,1,1 --micro-batch=1 --length=1024 --no-remat
  run --config=configs/mdlm_continuation.py --target=$target --mesh=8,1,1 --micro-batch=1 --length=1024 --no-remat
done
# The smallest fitting slice / GPU count for the 8B TokenDrift step at the paper's 8
# sequences per micro-step (L = 1024, remat): the fitting one and the next smaller. v5p-8
# (4 chips, one host) is the smallest slice the topology API takes; v6e-8 is above (does
# not fit).
run --config=configs/llada_drift.py --target=gpu:h100x4 --mesh=1,2,2 --micro-batch=4 --length=1024 --remat
run --config=configs/llada_drift.py --target=gpu:h100x2 --mesh=1,2,1 --micro-batch=4 --length=1024 --remat
run --config=configs/llada_drift.py --target=gpu:h200x2 --mesh=1,2,1 --micro-batch=4 --length=1024 --remat
run --config=configs/llada_drift.py --target=gpu:h200x1 --mesh=1,1,1 --micro-batch=8 --length=1024 --remat
run --config=configs/llada_drift.py --target=tpu:v5p-8 --mesh=1,2,2 --micro-batch=4 --length=1024 --remat
# Samplers (--program=sampler: the config's diffusion process at the evaluation's batch,
# configs/eval.py's 16 for MDLM/DUO; LLaDA at 1 and 8, and 8 with classifier-free guidance
# over 512-token prompts) and the Gen-PPL judge (GPT-2 Large's shape, 32 chunks of 1024).
for target in gpu:h100x1 tpu:v5p-8; do
  mesh=1,1,1; [[ $target == tpu:* ]] && mesh=4,1,1
  run --program=sampler --config=configs/mdlm_drift.py --target=$target --mesh=$mesh --batch=16
  run --program=sampler --config=configs/duo_drift.py --target=$target --mesh=$mesh --batch=16
  run --program=sampler --config=configs/llada_drift.py --target=$target --mesh=$mesh --batch=8
  run --program=sampler --config=configs/llada_drift.py --target=$target --mesh=$mesh --batch=8 --prompt-length=512 --cfg-scale=1
  run --program=judge --target=$target --mesh=$mesh --batch=32
done
run --program=sampler --config=configs/llada_drift.py --target=gpu:h100x1 --mesh=1,1,1 --batch=1
# docs/PERFORMANCE.md "GPU (H200)": launch/device_check.sh's benchmark cases on one H200
# (170M, L = 1024, one micro-step of the per-device batch; XLA attention: the deviceless
# compile refuses cuDNN's, see there).
dc() { run --config=configs/mdlm_drift.py --target=gpu:h200x1 --mesh=1,1,1 --length=1024 --attention-impl=xla "$@"; }
for objective in drift continuation; do
  for b in 2 8; do
    dc --objective=$objective --micro-batch=$b --global-batch=$b --no-remat
  done
  dc --objective=$objective --micro-batch=32 --global-batch=32 --remat --remat-policy=dots_with_no_batch_dims_saveable
done
# The 170M TokenDrift steps as shipped (no remat) at 8 sequences per micro-step on one H100.
run --config=configs/mdlm_drift.py --target=gpu:h100x1 --mesh=1,1,1 --micro-batch=8 --length=1024 --no-remat
run --config=configs/duo_drift.py --target=gpu:h100x1 --mesh=1,1,1 --micro-batch=8 --length=1024 --no-remat
run --config=configs/mdlm_drift.py --target=gpu:h100x1 --mesh=1,1,1 --micro-batch=8 --length=4096 --no-remat
# The smallest fitting slice at the paper's 8 sequences per micro-step (data x fsdp x
# micro-batch = 8), second pass: on GPUs the 170M continuation step and L = 4096 (with remat)
# on one H100, the 8B continuation step's smallest GPU counts, the 8B TokenDrift step at
# L = 4096 on 8 / 4 H100s and 4 / 2 H200s.
run --config=configs/mdlm_continuation.py --target=gpu:h100x1 --mesh=1,1,1 --micro-batch=8 --length=1024 --no-remat
run --config=configs/mdlm_drift.py --target=gpu:h100x1 --mesh=1,1,1 --micro-batch=8 --length=4096 --remat
run --config=configs/llada_continuation.py --target=gpu:h100x2 --mesh=1,2,1 --micro-batch=4 --length=1024 --remat
run --config=configs/llada_continuation.py --target=gpu:h200x1 --mesh=1,1,1 --micro-batch=8 --length=1024 --remat
run --config=configs/duo_drift.py --target=gpu:h100x1 --mesh=1,1,1 --micro-batch=8 --length=4096 --remat
run --config=configs/llada_continuation.py --target=gpu:h100x4 --mesh=1,2,2 --micro-batch=4 --length=1024 --remat
run --config=configs/llada_continuation.py --target=gpu:h200x2 --mesh=1,2,1 --micro-batch=4 --length=1024 --remat
run --config=configs/mdlm_continuation.py --target=gpu:h100x1 --mesh=1,1,1 --micro-batch=8 --length=4096 --remat
run --config=configs/llada_drift.py --target=gpu:h100x8 --mesh=1,4,2 --micro-batch=2 --length=4096 --remat
run --config=configs/llada_drift.py --target=gpu:h100x4 --mesh=1,4,1 --micro-batch=2 --length=4096 --remat
run --config=configs/llada_drift.py --target=gpu:h200x2 --mesh=1,2,1 --micro-batch=4 --length=4096 --remat
run --config=configs/llada_drift.py --target=gpu:h200x4 --mesh=1,4,1 --micro-batch=2 --length=4096 --remat
run --config=configs/llada_drift.py --target=gpu:h100x4 --mesh=1,2,2 --micro-batch=4 --length=4096 --remat
# The smallest TPU slices (4 chips: v5p-8, v6e-4; the 170M steps 2 per chip).
run --config=configs/mdlm_drift.py --target=tpu:v5p-8 --mesh=4,1,1 --micro-batch=2 --length=1024 --no-remat
run --config=configs/mdlm_continuation.py --target=tpu:v5p-8 --mesh=4,1,1 --micro-batch=2 --length=1024 --no-remat
run --config=configs/duo_drift.py --target=tpu:v5p-8 --mesh=4,1,1 --micro-batch=2 --length=1024 --no-remat
run --config=configs/mdlm_drift.py --target=tpu:v6e-4 --mesh=4,1,1 --micro-batch=2 --length=1024 --no-remat
run --config=configs/mdlm_continuation.py --target=tpu:v6e-4 --mesh=4,1,1 --micro-batch=2 --length=1024 --no-remat
run --config=configs/mdlm_drift.py --target=tpu:v5p-8 --mesh=4,1,1 --micro-batch=2 --length=4096 --remat
run --config=configs/mdlm_continuation.py --target=tpu:v5p-8 --mesh=4,1,1 --micro-batch=2 --length=4096 --remat
run --config=configs/duo_drift.py --target=tpu:v5p-8 --mesh=4,1,1 --micro-batch=2 --length=4096 --remat
run --config=configs/llada_continuation.py --target=tpu:v5p-8 --mesh=1,2,2 --micro-batch=4 --length=1024 --remat
# The v6e fitting slice of the 8B TokenDrift step (v6e-8 does not fit, above).
run --config=configs/llada_drift.py --target=tpu:v6e-16 --mesh=1,4,4 --micro-batch=2 --length=1024 --remat
# XLA:CPU's plan of the same rows (cpu:N simulated devices), for the comparison.
run --config=configs/llada_continuation.py --target=cpu:4 --mesh=1,2,2 --micro-batch=4 --length=1024 --remat
run --config=configs/llada_continuation.py --target=cpu:2 --mesh=1,2,1 --micro-batch=4 --length=1024 --remat
run --config=configs/llada_drift.py --target=cpu:8 --mesh=1,4,2 --micro-batch=2 --length=4096 --remat
run --config=configs/mdlm_continuation.py --target=cpu:1 --mesh=1,1,1 --micro-batch=8 --length=1024 --no-remat
run --config=configs/mdlm_drift.py --target=cpu:1 --mesh=1,1,1 --micro-batch=8 --length=4096 --remat
# The 8B continuation step at L = 4096, 8 sequences per micro-step: 4 H100s / H200s and 2.
for target in gpu:h100x4 gpu:h200x4; do
  run --config=configs/llada_continuation.py --target=$target --mesh=1,2,2 --micro-batch=4 --length=4096 --remat
done
for target in gpu:h100x2 gpu:h200x2; do
  run --config=configs/llada_continuation.py --target=$target --mesh=1,2,1 --micro-batch=4 --length=4096 --remat
done
# The 8B steps at L = 4096 on the smallest v5p slice (v5p-8: 4 chips), 4 per batch shard.
for config in llada_drift llada_continuation; do
  run --config=configs/$config.py --target=tpu:v5p-8 --mesh=1,2,2 --micro-batch=4 --length=4096 --remat
done
# The 8B steps on v6e (32 GiB per chip), 8 sequences per micro-step (2026-12-07): continuation
# at L = 1024 on v6e-8 and v6e-4; both steps at L = 4096 on v6e-16; continuation at 4096 on v6e-8.
run --config=configs/llada_continuation.py --target=tpu:v6e-8 --mesh=1,2,4 --micro-batch=4 --length=1024 --remat
run --config=configs/llada_continuation.py --target=tpu:v6e-4 --mesh=1,2,2 --micro-batch=4 --length=1024 --remat
for config in llada_drift llada_continuation; do
  run --config=configs/$config.py --target=tpu:v6e-16 --mesh=1,4,4 --micro-batch=2 --length=4096 --remat
done
run --config=configs/llada_continuation.py --target=tpu:v6e-8 --mesh=1,2,4 --micro-batch=4 --length=4096 --remat
