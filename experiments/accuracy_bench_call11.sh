#!/usr/bin/env bash
# Issue 25 and 27, GPU call 11 (one H100/H200, <= 10 min):
#   1. (issue 25) EfficientFormerV2's fixed supernet again -- call 10's `studentw` at 28 epochs (seed 0, batch 512,
#      lr 1e-3), which met the gap goals on the probe benchmark -- scoring the 24 ranking archs (a rerun: how
#      reproducible is it on a GPU?), then 12 `hwnas.predictor pairs` processes on its checkpoint until the
#      time is up: the predictor refitted on the fixed supernet (call 10 kept no checkpoint).
#   2. (issue 27) beside it, the AOTInductor smoke cases that call 3 left (hwnas_before ran out of time there):
#      the load probe in a library process, the apps' preload restart with CUDA-graph replay, and
#      `hwnas.extract format=[aoti]` from a clean environment. Its millisecond figures are taken with training
#      beside it (MPS clients alike): they show that replay works, they are no timing.
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
W=/tmp/w11
cp experiments/results/aoti_gpu_smoke_fix.jsonl "$OUT/aoti_gpu_smoke.jsonl"
python experiments/aoti_gpu_smoke.py --out "$OUT/aoti_gpu_smoke.jsonl" --work /tmp/aoti_smoke \
    --deadline-s ${SMOKE_DEADLINE:-500} > "$OUT/aoti_smoke.log" 2>&1 &
python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --spaces efficientformerv2 --sa-seeds 0,1,2 --workers 0 \
    --seed 0 --sn-epochs 28 --sn-batch 512 --sn-lr 1e-3 --random-archs 0 --eval-s-per-arch 2 \
    --deadline-s ${SN_DEADLINE:-360} --archs experiments/results/accuracy_bench_archs.json \
    --resume-from $R/h100-call4-efsupernet-probe/probe --resume-from $R/h100-call5-probe-all/p5 \
    --resume-from $R/h100-call6-efsupernet20/ef --variants studentw --out "$OUT/ef" --work $W/ef > "$OUT/ef.log" 2>&1
ck=$(ls $W/ef/*/supernet.pt | head -1)
run_pairs "$ck" ${END_S:-565} 300 12 "$OUT/pairs"
wait
mps_stop
cd "$OUT" && tar czf call11.tgz ef pairs ef.log aoti_smoke.log aoti_gpu_smoke.jsonl gpu.txt mps.txt && rm -rf ef pairs && ls -la
