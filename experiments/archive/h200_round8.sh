#!/bin/bash
# One H200 call (2026-12-02, round 8), three process trees side by side, each ending by its deadline:
#  a) EfficientFormerV2 `studentw` supernet, seed 1 (does run7's tau reproduce?), as many random archs as
#     the deadline allows (predictor pairs), and the 16 ranking archs' stand-alone seed 1 (noise ceiling);
#  b) Next-ViT `studentw` supernet, 7 epochs (does the remedy help Next-ViT?);
#  c) the EfficientFormerV2 picks chosen with the studentw predictor (picks_vs_references.py choose
#     --budgeted), trained alone with seeds 0 and 1 (references are resumed from earlier runs).
# Run: PYTHONPATH=. bash experiments/archive/h200_round8.sh  (with $OUT set; .data/fashion-mnist carried)
# Its outputs come back as one round8.tgz: the GPU machine returns at most 8 files, and the first run
# (2026-12-02, before the tar step was added) lost b) and c) that way; they were rerun (docs/accuracy.md).
set -u
export PYTHONUNBUFFERED=1
R=experiments/results/ranking_fidelity_raw
P=experiments/results/picks_vs_references_raw
RES="--resume-from $R/h200-run1 --resume-from $R/h200-run2 --resume-from $R/h200-run3 --resume-from $R/h200-run4"
COMMON="--data-root .data/fashion-mnist --image-size 32 --deadline-s ${DEADLINE:-520}"
SA="--sa-epochs 6 --sa-batch 512 --sa-lr 2e-3 --sa-seeds 0,1 --repeat-archs 0"
SN="--variants studentw --sn-batch 1024 --sn-lr 1e-3"
mkdir -p "$OUT/a" "$OUT/b" "$OUT/c"
python experiments/ranking_fidelity.py gpu --out "$OUT/a" --work /tmp/rf_a --spaces efficientformerv2 $SN --seed 1 \
    --sn-epochs 10 --random-archs 400 $SA --workers 3 $RES $COMMON > "$OUT/a.log" 2>&1 &
python experiments/ranking_fidelity.py gpu --out "$OUT/b" --work /tmp/rf_b --spaces nextvit $SN \
    --sn-epochs 7 --random-archs 20 --workers 0 $COMMON > "$OUT/b.log" 2>&1 &
python experiments/ranking_fidelity.py gpu --out "$OUT/c" --work /tmp/rf_c --archs experiments/results/picks_vs_references_archs.json \
    --spaces efficientformerv2 --variants none $SA --workers 3 $RES --resume-from $P/h200-run5 --resume-from $P/h200-run6 \
    $COMMON > "$OUT/c.log" 2>&1 &
wait
for f in a b c; do tail -n 3 "$OUT/$f.log"; done
cd "$OUT" && tar czf round8.tgz a b c && rm -rf a b c
