#!/usr/bin/env bash
# Issue 25, GPU call 5 (one H100/H200, ~3 min, what the session's GPU time had left): the probe regime of
# call 4 (first 10,000 Fashion-MNIST training images, 32 px, 20 epochs at batch 256, lr 1e-3) on all 24
# EfficientFormerV2 ranking archs, seed 0 (the 6 archs of call 4's probe with 2 seeds are carried), under
# CUDA MPS. Does the probe regime rank EfficientFormerV2's archs by capacity across the whole set?
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
. experiments/mps.sh
python experiments/ranking_fidelity.py gpu --data-root .data/fashion-mnist --deadline-s ${DEADLINE:-200} \
    --archs experiments/results/accuracy_bench_archs.json --spaces efficientformerv2 --variants none \
    --image-size 32 --data limit_train=10000 --sa-epochs 20 --sa-lr 1e-3 --sa-batch 256 --sa-seeds 0 \
    --repeat-archs 0 --workers 12 --min-job-s 10 \
    --resume-from experiments/results/accuracy_bench_raw/h100-call4-efsupernet-probe/probe \
    --out "$OUT/p5" > "$OUT/p5.log" 2>&1
mps_stop
cd "$OUT" && tar czf call5.tgz p5 p5.log gpu.txt mps.txt && rm -rf p5 && ls -la
