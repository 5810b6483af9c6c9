#!/usr/bin/env bash
# Issue 25, GPU calls 5 and 6 (one H100/H200, <= 10 min each): the probe regime of call 4 (first 10,000
# Fashion-MNIST training images, 32 px, 20 epochs at batch 256, AdamW lr 1e-3; stand-alone recipe
# 04c46a20c706 per space) on all 24 ranking archs of BOTH spaces, seeds 0, 1, 2, under CUDA MPS. Jobs run
# seed-major (every arch's seed 0, then seed 1, ...; the longest first within a seed), so a call cut by its
# deadline leaves whole seeds. The 6 archs x 2 seeds of call 4's probe are carried (--resume-from); call 6
# and 7 run this script again with RESUME="<earlier calls' unpacked folders>" (space-separated), carrying their runs.
# Does the probe regime rank EfficientFormerV2's archs by capacity across the whole set, and does it
# separate Next-ViT's archs at all (call 4: 6 archs within 88.2-89.2 %)?
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
resume=(--resume-from experiments/results/accuracy_bench_raw/h100-call4-efsupernet-probe/probe)
for r in ${RESUME:-}; do resume+=(--resume-from "$r"); done
python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --deadline-s ${DEADLINE:-490} \
    --archs experiments/results/accuracy_bench_archs.json --variants none --sa-seeds 0,1,2 \
    --workers ${WORKERS:-14} --min-job-s 10 "${resume[@]}" \
    --out "$OUT/p5" > "$OUT/p5.log" 2>&1
mps_stop
cd "$OUT" && tar czf call5.tgz p5 p5.log gpu.txt mps.txt && rm -rf p5 && ls -la
