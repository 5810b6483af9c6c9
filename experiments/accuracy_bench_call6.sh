#!/usr/bin/env bash
# Issue 25, GPU call 6 (one H100/H200, ~9 min), EfficientFormerV2 in the probe regime (first 10,000 Fashion-MNIST
# training images, 32 px; stand-alone: 20 epochs, batch 256, AdamW lr 1e-3, recipe 04c46a20c706), side by side
# under CUDA MPS:
#   1. the stand-alone seeds call 5 left (24 ranking archs x seeds 0-2; calls 4 and 5 carried);
#   2. EfficientFormerV2's `studentw` supernet (seed 0) trained as many epochs as the stand-alone runs: 20 at
#      batch 512, lr 1e-3 (call 4's 14 epochs left every arch ~3 points under its stand-alone accuracy), then
#      it scores the 24 archs. (The call as run passed --sn-lr 2e-3, which the `studentw` variant silently
#      replaced by its own 1e-3; ranking_fidelity.py now lets --sn-lr win, so this line says 1e-3: what ran.)
#   3. the search's picks of picks_vs_references_archs.json (chosen on the CPU with the shipped predictor),
#      2 seeds each, in the same regime (the references are carried from calls 4 and 5);
#   4. then 12 `hwnas.predictor pairs` processes on that supernet until the time is up.
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
W=/tmp/w6
probe=("${PROBE[@]}" --min-job-s 40 --spaces efficientformerv2
       --resume-from $R/h100-call4-efsupernet-probe/probe --resume-from $R/h100-call5-probe-all/p5)
python experiments/ranking_fidelity.py gpu "${probe[@]}" --archs experiments/results/picks_vs_references_archs.json \
    --variants none --sa-seeds 0,1 --workers 3 --deadline-s ${PICKS_DEADLINE:-420} --out "$OUT/picks" \
    > "$OUT/picks.log" 2>&1 &
python experiments/ranking_fidelity.py gpu "${probe[@]}" --archs experiments/results/accuracy_bench_archs.json \
    --sa-seeds 0,1,2 --workers 10 --variants studentw --seed 0 --sn-epochs 20 --sn-batch 512 --sn-lr 1e-3 \
    --random-archs 0 --eval-s-per-arch 2 --deadline-s ${SN_DEADLINE:-450} --out "$OUT/ef" --work $W/ef \
    > "$OUT/ef.log" 2>&1
ck=$(ls $W/ef/*/supernet.pt | head -1)
run_pairs "$ck" ${END_S:-572} 100 12 "$OUT/pairs"
wait
mps_stop
cd "$OUT" && tar czf call6.tgz ef picks pairs ef.log picks.log gpu.txt mps.txt && rm -rf ef picks pairs && ls -la
