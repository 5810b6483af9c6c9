#!/usr/bin/env bash
# Issue 25 point 1, a harder Fashion-MNIST task: does it separate the archs trained alone where plain
# Fashion-MNIST does not (Next-ViT: its archs lie within 0.45 points at their best, round 19)? Each sample is
# two items side by side, labelled by the pair (`data.items=2`: 100 classes, 56x56 canvas resized to 64 px),
# so an arch must recognise both and bind each to its place. The six exploration archs of each space in SPACES
# (accuracy_bench_explore_archs.json) trained alone, seed 0, plus REPEAT of them per space with a second
# seed (the seed noise), one ranking_fidelity.py gpu process per space side by side under CUDA MPS. Every job
# resumes from the folders in RESUME (earlier calls' output of this script, copied into the repository), so a
# call trains only what is missing. Sized for one call: at 64 px an H100 trained Next-ViT-L 10 epochs on 10,000
# images in 217 s beside two others (call 1), so the first call is Next-ViT's 8 runs at the 10-epoch regime
# (lr 2e-3, as regimes.md's plain 64 px row); EfficientFormerV2 (SPACES=efficientformerv2) in a call of its own.
# Env: EPOCHS (10), LR (2e-3), TRAIN (10000 pairs), SIZE (64), WORKERS per space (8), REPEAT (2),
# SPACES (nextvit), RESUME, TAG (pairs), CALL_S (570).
#   CALL_S=570 bash experiments/accuracy_bench_pairs.sh        (carry .data and .whl)
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
D=$(( ${CALL_S:-570} - ($(date +%s) - T0) - 60 ))
RES=(); for d in ${RESUME:-}; do RES+=(--resume-from "$d"); done
for sp in ${SPACES:-nextvit}; do
    python experiments/ranking_fidelity.py gpu --data-root .data/fashion-mnist --image-size ${SIZE:-64} \
        --data limit_train=${TRAIN:-10000} items=2 --sa-epochs ${EPOCHS:-10} --sa-lr ${LR:-2e-3} --sa-batch 256 \
        --repeat-archs ${REPEAT:-2} --sa-seeds 0 --spaces $sp --variants none \
        --archs experiments/results/accuracy_bench_explore_archs.json "${RES[@]}" --workers ${WORKERS:-8} \
        --min-job-s 40 --deadline-s $D --out "$OUT/pairs_$sp" > "$OUT/pairs_$sp.log" 2>&1 &
done
wait
mps_stop
echo "call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
cd "$OUT" && tar czf ${TAG:-pairs}.tgz pairs_* *.log gpu.txt mps.txt && rm -rf pairs_* && ls -la
