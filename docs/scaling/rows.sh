#!/usr/bin/env bash
# The rows of docs/SCALING.md: one process (one compiled step) per row, appended to
# docs/scaling/rows.jsonl. Run from the repository root.
set -u
out=${1:-docs/scaling/rows.jsonl}
row() { python launch/plan_memory.py --out="$out" "$@" || echo "row failed: $*"; }
for mb in 1 2 4; do
  row --config=configs/llada_drift.py --devices=8 --mesh=1,2,4 --micro-batch=$mb --length=1024
  row --config=configs/llada_drift.py --devices=16 --mesh=1,4,4 --micro-batch=$mb --length=1024
  row --config=configs/llada_drift.py --devices=64 --mesh=1,8,8 --micro-batch=$mb --length=1024
done
row --config=configs/llada_drift.py --devices=8 --mesh=1,2,4 --micro-batch=1 --length=1024 --no-remat
row --config=configs/llada_drift.py --devices=64 --mesh=1,8,8 --micro-batch=1 --length=1024 --no-remat
for mb in 1 2; do
  row --config=configs/llada_drift.py --devices=16 --mesh=1,4,4 --micro-batch=$mb --length=4096
  row --config=configs/llada_drift.py --devices=64 --mesh=1,8,8 --micro-batch=$mb --length=4096
done
row --config=configs/llada_drift.py --devices=8 --mesh=1,2,4 --micro-batch=1 --length=4096
row --config=configs/llada_continuation.py --devices=8 --mesh=1,2,4 --micro-batch=1 --length=1024
row --config=configs/llada_continuation.py --devices=8 --mesh=1,2,4 --micro-batch=2 --length=1024
row --config=configs/llada_continuation.py --devices=64 --mesh=1,8,8 --micro-batch=4 --length=1024
# The smallest meshes (8 sequences per micro-step, as the paper's 4 GPUs x 2).
row --config=configs/llada_drift.py --devices=4 --mesh=1,2,2 --micro-batch=4 --length=1024
row --config=configs/llada_drift.py --devices=2 --mesh=1,2,1 --micro-batch=4 --length=1024
