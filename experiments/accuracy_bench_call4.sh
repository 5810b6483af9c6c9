#!/usr/bin/env bash
# Issue 25, GPU call 4 (one H100/H200, ~9.5 min), three things side by side under CUDA MPS
# (experiments/mps.sh: the processes' small 32 px kernels share the GPU instead of time-slicing):
#   1. EfficientFormerV2's `studentw` supernet (seed 0) in the benchmark regime of call 3 (first 10,000
#      Fashion-MNIST training images, 32 px), 14 epochs at batch 512, lr 1e-3; it then scores the 24 ranking
#      archs (their three stand-alone seeds are carried from call 3 with --resume-from).
#   2. Then 8 `hwnas.predictor pairs` processes on that supernet, seeded apart, until the time is up: the
#      (arch, inherited top-1) pairs the predictor is refitted on (each line written when measured).
#   3. A probe of a longer, gentler stand-alone regime (same 10,000 images, 20 epochs, lr 1e-3): the 6 archs
#      per space of accuracy_bench_explore_archs.json x 2 seeds. Call 3 showed Next-ViT's larger archs
#      ending 10 epochs at lr 2e-3 with a HIGHER training loss (underfit, not overfit); does their ranking
#      turn when they are trained longer and more gently, and does the seed noise fall?
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:. || export PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
. experiments/mps.sh
W=/tmp/w4
data=(--data-root .data/fashion-mnist --image-size 32 --data limit_train=10000)
python experiments/ranking_fidelity.py gpu "${data[@]}" --archs experiments/results/accuracy_bench_explore_archs.json \
    --variants none --sa-epochs 20 --sa-lr 1e-3 --sa-batch 256 --sa-seeds 0,1 --repeat-archs 0 --workers 10 \
    --deadline-s ${PROBE_DEADLINE:-500} --out "$OUT/probe" > "$OUT/probe.log" 2>&1 &
python experiments/ranking_fidelity.py gpu "${data[@]}" --archs experiments/results/accuracy_bench_archs.json \
    --spaces efficientformerv2 --variants studentw --seed 0 --sa-epochs 10 --sa-batch 256 --sa-seeds 0,1,2 \
    --repeat-archs 0 --workers 0 --sn-epochs 14 --sn-batch 512 --sn-lr 1e-3 --random-archs 0 --eval-s-per-arch 2 \
    --deadline-s ${SN_DEADLINE:-330} --resume-from experiments/results/accuracy_bench_raw/h100-call3-seeds \
    --out "$OUT/ef" --work $W/ef > "$OUT/ef.log" 2>&1
mkdir -p "$OUT/pairs"
ck=$(ls $W/ef/*/supernet.pt | head -1)
echo "efficientformerv2: $ck" > "$OUT/pairs/checkpoints.txt"
for k in 1 2 3 4 5 6 7 8; do
    timeout ${PAIRS_S:-160} python -m hwnas.predictor pairs --checkpoint "$ck" --n 400 --seed $k --batch-size 500 \
        --data name=fashion_mnist root=.data/fashion-mnist image_size=32 limit_train=10000 val_size=10000 \
        --out "$OUT/pairs/ef_$k.jsonl" > "$OUT/pairs/ef_$k.log" 2>&1 &
done
wait
mps_stop
cd "$OUT" && tar czf call4.tgz ef probe pairs ef.log probe.log gpu.txt mps.txt && rm -rf ef probe pairs && ls -la
