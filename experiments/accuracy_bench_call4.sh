#!/usr/bin/env bash
# Issue 25, GPU call 4 (one H100/H200, ~9 min): the supernets of point 3 in the benchmark regime of call 3
# (first 10,000 Fashion-MNIST training images, 32 px) and the (arch, inherited top-1) pairs the accuracy
# predictors are refitted on.
#   1. Two supernets side by side, 14 epochs at batch 512, lr 1e-3: EfficientFormerV2 `studentw` (seed 0)
#      and Next-ViT `consistent` (seed 1; seed 0 is call 2's). Each then scores the 24 ranking archs.
#      The stand-alone runs are all carried from call 3 (--resume-from), so no worker trains.
#   2. Pairs: 6 `hwnas.predictor pairs` processes per supernet, seeded apart, until the time is up
#      (each line is written when measured; the analysis drops duplicates).
# CUDA MPS lets the processes' small kernels share the GPU (experiments/mps.sh).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:. || export PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
. experiments/mps.sh
W=/tmp/w4
common=(--data-root .data/fashion-mnist --archs experiments/results/accuracy_bench_archs.json --image-size 32
        --data limit_train=10000 --sa-epochs 10 --sa-batch 256 --sa-seeds 0,1,2 --repeat-archs 0 --workers 0
        --sn-epochs 14 --sn-batch 512 --sn-lr 1e-3 --random-archs 0 --eval-s-per-arch 2
        --deadline-s ${SN_DEADLINE:-330} --resume-from experiments/results/accuracy_bench_raw/h100-call3-seeds)
python experiments/ranking_fidelity.py gpu "${common[@]}" --spaces efficientformerv2 --variants studentw --seed 0 \
    --out "$OUT/ef" --work $W/ef > "$OUT/ef.log" 2>&1 &
python experiments/ranking_fidelity.py gpu "${common[@]}" --spaces nextvit --variants consistent --seed 1 \
    --out "$OUT/nv" --work $W/nv > "$OUT/nv.log" 2>&1 &
wait
mkdir -p "$OUT/pairs"
for sp in ef nv; do
    ck=$(ls $W/$sp/*/supernet.pt | head -1)
    echo "$sp: $ck" >> "$OUT/pairs/checkpoints.txt"
    for k in 1 2 3 4 5 6; do
        timeout ${PAIRS_S:-150} python -m hwnas.predictor pairs --checkpoint "$ck" --n 400 --seed $k --batch-size 500 \
            --data name=fashion_mnist root=.data/fashion-mnist image_size=32 limit_train=10000 val_size=10000 \
            --out "$OUT/pairs/${sp}_$k.jsonl" > "$OUT/pairs/${sp}_$k.log" 2>&1 &
    done
done
wait
mps_stop
cd "$OUT" && tar czf call4.tgz ef nv pairs ef.log nv.log gpu.txt mps.txt && rm -rf ef nv pairs && ls -la
