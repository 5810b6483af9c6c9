#!/usr/bin/env bash
# Issue 25, GPU call 2 (one H100/H200, ~9 min), the benchmark regime chosen from call 1: Fashion-MNIST,
# first 10,000 training images, 32 px, stand-alone 10 epochs at batch 256. Next-ViT only: does a supernet
# whose random subnets are all structurally consistent (variant `consistent`) rank the 24 consistent
# archs of accuracy_bench_archs.json, where the same recipe with uniform sampling (`studentw`, the
# control) does not? Both supernets and the stand-alone runs (seed 0 of all 24, then seed 1) share the GPU.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
python experiments/ranking_fidelity.py gpu --data-root .data/fashion-mnist --deadline-s ${DEADLINE:-530} \
    --archs experiments/results/accuracy_bench_archs.json --spaces nextvit --variants consistent,studentw \
    --image-size 32 --data limit_train=10000 --sa-epochs 10 --sa-batch 256 --sa-seeds 0,1 --repeat-archs 0 \
    --workers 6 --sn-epochs 14 --sn-batch 512 --sn-lr 1e-3 --random-archs 40 \
    --out "$OUT/nv" --work /tmp/w_nv > "$OUT/nv.log" 2>&1
cd "$OUT" && tar czf call2.tgz nv && rm -rf nv && ls -la
