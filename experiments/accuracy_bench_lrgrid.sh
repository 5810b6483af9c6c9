#!/usr/bin/env bash
# Issue 25, the next benchmark's stand-alone side (docs/accuracy.md, round 18): archs trained alone at each rate of
# a small grid, long enough for the smaller rates to finish (40 epochs by default), so that each arch can be
# judged on its best rate, chosen on val (`ranking_fidelity.py analyze --standalone-recipe SPACE=ID1+ID2+ID3`).
# One ranking_fidelity.py gpu process per rate, side by side under CUDA MPS, the probe's data (10,000 images,
# 32 px); every job resumes from the folders in RESUME (earlier calls' output of this script, copied into the
# repository), so a call trains only what is missing. Sized by env:
#   SPACE (nextvit), ARCHS (the six Next-ViT pilot archs), LRS ("1e-3 5e-4 2.5e-4"), EPOCHS (40), SEEDS (0),
#   WORKERS per rate (6), RESUME (folders, space-separated), TAG (the tar's name), CALL_S (540), EXTRA (more
#   `ranking_fidelity.py gpu` options, e.g. --sa-zero-init-residual).
# Next-ViT's residual branches zero-initialised (round 20's next step), on the probe benchmark's recipe, two seeds:
#   EXTRA=--sa-zero-init-residual LRS=1e-3 EPOCHS=20 SEEDS=0,1 TAG=zeroinit CALL_S=400 bash experiments/accuracy_bench_lrgrid.sh
# First call (Next-ViT's six pilot archs, one seed: does Next-ViT-L, at its best rate and trained long enough,
# rank by its capacity?):   CALL_S=540 bash experiments/accuracy_bench_lrgrid.sh        (carry .data and .whl)
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
D=$(( ${CALL_S:-540} - ($(date +%s) - T0) - 60 ))
SP=${SPACE:-nextvit}
AR=${ARCHS:-experiments/results/accuracy_bench_nv_pilot_archs.json}
RES=(); for d in ${RESUME:-}; do RES+=(--resume-from "$d"); done
for lr in ${LRS:-1e-3 5e-4 2.5e-4}; do
    python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --sa-lr $lr --sa-epochs ${EPOCHS:-40} --spaces $SP \
        --variants none --sa-seeds ${SEEDS:-0} --archs $AR "${RES[@]}" --workers ${WORKERS:-6} --min-job-s 40 \
        --deadline-s $D ${EXTRA:-} --out "$OUT/${SP}_lr$lr" > "$OUT/${SP}_lr$lr.log" 2>&1 &
done
wait
mps_stop
echo "call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
cd "$OUT" && tar czf ${TAG:-lrgrid}.tgz ${SP}_lr* *.log gpu.txt mps.txt && rm -rf ${SP}_lr* && ls -la
