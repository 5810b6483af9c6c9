#!/usr/bin/env bash
# Issue 25, GPU call 22 (one H100/H200 under CUDA MPS, a ~500 s command): does a lower stand-alone learning rate
# let Next-ViT's deep archs train as well as its shallow ones?
# Evidence (CPU, the committed probe records, recipe 04c46a20c706): in the probe regime (10,000 images, 32 px, 20
# epochs, lr 1e-3) test top-1 follows the final training loss in both spaces (Kendall tau -0.70 Next-ViT, -0.90
# EfficientFormerV2), and the training loss rises with Next-ViT's MACs (tau +0.45) where it falls with
# EfficientFormerV2's (-0.72): Next-ViT's large archs underfit, they do not overfit; at lr 2e-3 they were worse
# still and at 45 epochs they caught up. So the stand-alone ranking against capacity looks like an optimisation
# property of the recipe, which a smaller lr should change. Jobs, side by side:
#  1. Next-ViT, the six pilot archs spread over MACs (min ... Next-ViT-L), probe data, lr 5e-4, seeds 0 and 1
#  2. the same at lr 2.5e-4
#  3-4. EfficientFormerV2's six explore archs (min, S0, S1, S2, L, stratum4) at lr 5e-4 and 2.5e-4, seeds 0, 1
#  5. the probe recipe's missing third seeds of Next-ViT's five largest ranking archs (the deadline cut them in
#     calls 7-8), so that every one of the 24 has three
# Carry .data and .whl.   CALL_S=520 bash experiments/accuracy_bench_call22.sh
# Call 22 itself got 330 s, too few for Next-ViT-L (cut at both rates) and most third seeds; run again, every job
# resumes from call 22's committed folder of its name (only what it lacks is trained; give it 500+ s):
#   TAG=call24 CALL_S=540 bash experiments/accuracy_bench_call22.sh
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
D=$(( ${CALL_S:-520} - ($(date +%s) - T0) - 60 ))
C22=$R/h100-call22-lr
again() { [ -d "$C22/$1" ] && echo "--resume-from $C22/$1"; }  # call 22's records of this job, when rerun
NV=experiments/results/accuracy_bench_nv_pilot_archs.json
EF=experiments/results/accuracy_bench_explore_archs.json
for lr in 5e-4 2.5e-4; do
    python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --sa-lr $lr --spaces nextvit --variants none \
        --sa-seeds 0,1 --archs $NV $(again nv_lr$lr) --workers 6 --min-job-s 40 --deadline-s $D --out "$OUT/nv_lr$lr" > "$OUT/nv_lr$lr.log" 2>&1 &
    python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --sa-lr $lr --spaces efficientformerv2 --variants none \
        --sa-seeds 0,1 --archs $EF $(again ef_lr$lr) --workers 4 --min-job-s 20 --deadline-s $D --out "$OUT/ef_lr$lr" > "$OUT/ef_lr$lr.log" 2>&1 &
done
python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --spaces nextvit --variants none --sa-seeds 0,1,2 \
    --archs experiments/results/accuracy_bench_archs.json --resume-from $R/h100-call16-nvpicks/picks $(again seed2) --workers 5 --min-job-s 40 --deadline-s $D --out "$OUT/seed2" \
    > "$OUT/seed2.log" 2>&1 &
wait
mps_stop
echo "call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
cd "$OUT" && tar czf ${TAG:-call22}.tgz nv_lr* ef_lr* seed2 *.log gpu.txt mps.txt && rm -rf nv_lr* ef_lr* seed2 && ls -la
