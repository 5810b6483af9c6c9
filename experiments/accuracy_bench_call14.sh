#!/usr/bin/env bash
# Issue 25, GPU call 14 (one H100/H200, <= 10 min; RUN 2026-12-07 on an H100 as written: 521 s,
# docs/accuracy.md round 14): Next-ViT's predictor refitted on its fixed supernet (point 3: >= 300 pairs,
# held-out tau >= 0.7). Call 13 (round 13, H200) trained Next-ViT's `consistent` supernet 28 epochs in 229 s
# (S/B/L within 1.56 / 1.38 / 0.52 points of training alone) but kept no checkpoint: the same recipe trained
# 32 epochs instead of 28 (Next-ViT-S missed the 1.5-point goal by 0.06 at 28; length is what closed the gaps so
# far; SN_EPOCHS=28 is call 13's recipe again), scoring the 24 ranking archs, then 12 `hwnas.predictor pairs`
# processes on its checkpoint until the time is up. `hwnas.predictor pairs` reads the checkpoint's train config
# and so draws the consistent archs only (the ones the supernet trained).
# Then on the CPU: python -m hwnas.predictor fit (docs/accuracy.md, "Accuracy predictor") on the pairs.
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
W=/tmp/w14
python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --spaces nextvit --sa-seeds 0,1,2 --workers 0 --seed 0 \
    --sn-epochs ${SN_EPOCHS:-32} --sn-batch 512 --sn-lr 1e-3 --random-archs 0 --eval-s-per-arch 3 \
    --deadline-s ${SN_DEADLINE:-400} --archs experiments/results/accuracy_bench_archs.json \
    --resume-from $R/h100-call5-probe-all/p5 --resume-from $R/h100-call7-nextvit-seed2/p5 \
    --resume-from $R/h100-call8-nextvit-seed2b/p5 --variants consistent --out "$OUT/nv" --work $W/nv \
    > "$OUT/nv.log" 2>&1
ck=$(ls $W/nv/*/supernet.pt | head -1)
run_pairs "$ck" ${END_S:-520} 400 12 "$OUT/pairs"
wait
mps_stop
cd "$OUT" && tar czf call14.tgz nv pairs nv.log gpu.txt mps.txt && rm -rf nv pairs && ls -la
