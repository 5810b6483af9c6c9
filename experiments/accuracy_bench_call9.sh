#!/usr/bin/env bash
# Issue 25, GPU call 9 (one H100/H200, ~8 min; NOT RUN: superseded by call 10, which measured `strata` at 28 epochs): does `train.macs_strata` close
# EfficientFormerV2's small-end gap on the probe benchmark? Round 11's `studentw` supernet (20 epochs, batch 512,
# lr 1e-3) left the archs up to ~410 MMACs 2.6-3.8 points under their stand-alone top-1 (references S1 -1.82,
# S2 -1.68; 65 % of the other archs within 3 points). Side by side under CUDA MPS, both seed 0, same recipe:
#   1. the `strata` variant (studentw + macs_strata: the two random subnets of a step from the lower and the
#      upper half of log MACs), then it scores the 24 ranking archs (stand-alone seeds carried from calls 4-6);
#   2. Next-ViT's `consistent_strata` (the consistent supernet, banded), 20 epochs, scoring its 24 archs;
#   3. then 8 `hwnas.predictor pairs` processes on the EfficientFormerV2 supernet until the time is up.
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
W=/tmp/w9
common=("${PROBE[@]}" --sa-seeds 0,1,2 --workers 0 --seed 0 --sn-epochs 20 --sn-batch 512
        --sn-lr 1e-3 --random-archs 0 --eval-s-per-arch 2 --deadline-s ${SN_DEADLINE:-420}
        --archs experiments/results/accuracy_bench_archs.json
        --resume-from $R/h100-call4-efsupernet-probe/probe --resume-from $R/h100-call5-probe-all/p5
        --resume-from $R/h100-call6-efsupernet20/ef --resume-from $R/h100-call7-nextvit-seed2/p5
        --resume-from $R/h100-call8-nextvit-seed2b/p5)
python experiments/ranking_fidelity.py gpu "${common[@]}" --spaces nextvit --variants consistent_strata \
    --out "$OUT/nv" --work $W/nv > "$OUT/nv.log" 2>&1 &
python experiments/ranking_fidelity.py gpu "${common[@]}" --spaces efficientformerv2 --variants strata \
    --out "$OUT/ef" --work $W/ef > "$OUT/ef.log" 2>&1
ck=$(ls $W/ef/*/supernet.pt | head -1)
run_pairs "$ck" ${END_S:-572} 200 8 "$OUT/pairs"
wait
mps_stop
cd "$OUT" && tar czf call9.tgz ef nv pairs ef.log nv.log gpu.txt mps.txt && rm -rf ef nv pairs && ls -la
