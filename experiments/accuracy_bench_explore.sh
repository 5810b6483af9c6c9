#!/usr/bin/env bash
# Issue 25, GPU call 1 (one H100/H200, ~9 min): which Fashion-MNIST regime separates archs trained alone?
# Four stand-alone regimes (6 archs per space from accuracy_bench_archs.json, 3 seeds each) side by side,
# and Next-ViT's supernet `studentw` vs `depth` (train.depth_slots=1) at 32 px, 4 epochs, on the 16
# ranking archs of ranking_fidelity_archs.json (Next-ViT-S/B/L among them): does training the max widths
# at a random depth fix S/B's inheritance? Results tarred into $OUT (at most 8 files come back).
set -u
cd "$(dirname "$0")/.."
D=${DEADLINE:-520}
RF="python experiments/ranking_fidelity.py gpu --data-root .data/fashion-mnist --deadline-s $D"
EX="--archs experiments/results/accuracy_bench_explore_archs.json --variants none --repeat-archs 0 --sa-seeds 0,1,2"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
$RF $EX --workers 3 --image-size 32 --sa-epochs 2 --sa-batch 512 --sa-warmup-epochs 0.3 \
    --out "$OUT/full2ep" --work /tmp/w_a > "$OUT/full2ep.log" 2>&1 &
$RF $EX --workers 3 --image-size 32 --sa-epochs 10 --sa-batch 256 --data limit_train=10000 \
    --out "$OUT/l10k10ep" --work /tmp/w_b > "$OUT/l10k10ep.log" 2>&1 &
$RF $EX --workers 3 --image-size 32 --sa-epochs 20 --sa-batch 256 --data limit_train=5000 \
    --out "$OUT/l5k20ep" --work /tmp/w_c > "$OUT/l5k20ep.log" 2>&1 &
$RF $EX --workers 3 --image-size 64 --sa-epochs 10 --sa-batch 256 --data limit_train=10000 \
    --out "$OUT/l10k10ep64" --work /tmp/w_d > "$OUT/l10k10ep64.log" 2>&1 &
$RF --variants studentw,depth --spaces nextvit --workers 0 --random-archs 8 --image-size 32 --sn-epochs 4 \
    --sn-batch 1024 --sn-lr 1e-3 --out "$OUT/nvdepth" --work /tmp/w_n > "$OUT/nvdepth.log" 2>&1 &
wait
cd "$OUT" && tar czf explore.tgz full2ep l10k10ep l5k20ep l10k10ep64 nvdepth && rm -rf full2ep l10k10ep l5k20ep l10k10ep64 nvdepth
ls -la "$OUT"
