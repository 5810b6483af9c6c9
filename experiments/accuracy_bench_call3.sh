#!/usr/bin/env bash
# Issue 25, GPU call 3 (one H100/H200, ~9.5 min): the benchmark of point 1 with three stand-alone seeds in
# both spaces. Regime (chosen in call 1, docs/accuracy.md): Fashion-MNIST, first 10,000 training images,
# 32 px, 10 epochs at batch 256, lr 2e-3 (recipe 900be163a5d8). EfficientFormerV2: the 24 ranking archs of
# accuracy_bench_archs.json x seeds 0, 1, 2; Next-ViT: seed 2 of its 24 (seeds 0 and 1 come from call 2,
# carried with --resume-from). No supernet: every worker trains stand-alone runs.
# The workers' kernels are small (32 px), so the GPU runs them side by side under CUDA MPS when the
# daemon starts (otherwise time-sliced, as before); the log says which.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
. experiments/mps.sh
python experiments/ranking_fidelity.py gpu --data-root .data/fashion-mnist --deadline-s ${DEADLINE:-530} \
    --archs experiments/results/accuracy_bench_archs.json --spaces efficientformerv2,nextvit --variants none \
    --image-size 32 --data limit_train=10000 --sa-epochs 10 --sa-batch 256 --sa-seeds 0,1,2 --repeat-archs 0 \
    --workers ${WORKERS:-12} --resume-from experiments/results/accuracy_bench_raw/h100-call2-nextvit-consistent \
    --out "$OUT/sa" > "$OUT/sa.log" 2>&1
mps_stop
cd "$OUT" && tar czf call3.tgz sa sa.log gpu.txt mps.txt && rm -rf sa && ls -la
