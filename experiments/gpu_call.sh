# Sourced by the GPU call scripts (issue 25): the GPU machine's setup and the predictor-pairs step they share.
#   . experiments/gpu_call.sh    -> $T0, $R (earlier calls' raw records), wheels of .whl/ installed (PYTHONPATH), $OUT/gpu.txt, CUDA MPS (experiments/mps.sh)
#   "${PROBE[@]}"                -> the probe benchmark's data and stand-alone recipe (ranking_fidelity.py gpu options)
#   unpack_state DIR TGZ         -> on a fresh machine (no DIR yet under outputs/), the previous call's state TGZ
#                                  (copied into the repository) unpacked into outputs/; says which in $OUT/gpu.txt
#   run_pairs CKPT END_S SEED0 N DIR   -> N `hwnas.predictor pairs` processes on the supernet CKPT (seeds SEED0+1..N)
#                                  on the probe data, each line written when measured, all stopped END_S after $T0
export PYTHONUNBUFFERED=1
T0=${T0:-$(date +%s)}  # the call's start: run_pairs counts the time left from it
R=experiments/results/accuracy_bench_raw  # the raw records of earlier calls (--resume-from)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:. || export PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/gpu.txt"  # >>: a second script of the same call adds to it
. experiments/mps.sh

# the probe benchmark (docs/accuracy.md, round 11): the first 10,000 Fashion-MNIST training images at 32 px, every
# arch trained alone 20 epochs at batch 256, lr 1e-3 (stand-alone recipe 04c46a20c706: --resume-from matches it)
PROBE=(--data-root .data/fashion-mnist --image-size 32 --data limit_train=10000 --sa-epochs 20 --sa-lr 1e-3
       --sa-batch 256 --repeat-archs 0)

run_pairs() {
    local ck=$1 left=$(( $2 - ($(date +%s) - T0) )) seed0=$3 n=$4 dir=$5
    mkdir -p "$dir"
    echo "checkpoint: $ck; pairs: $left s" >> "$dir/checkpoints.txt"
    { [ -n "$ck" ] && [ "$left" -gt 40 ]; } || return 0
    for k in $(seq 1 "$n"); do
        timeout "$left" python -m hwnas.predictor pairs --checkpoint "$ck" --n 400 --seed $((seed0 + k)) --batch-size 500 \
            --data name=fashion_mnist root=.data/fashion-mnist image_size=32 limit_train=10000 val_size=10000 \
            --out "$dir/ef_$k.jsonl" > "$dir/ef_$k.log" 2>&1 &
    done
}

unpack_state() {
    if [ ! -d "outputs/$1" ] && [ -f "$2" ]; then
        mkdir -p outputs && tar xzf "$2" -C outputs && echo "state: unpacked $2" >> "$OUT/gpu.txt"
    else
        echo "state: outputs/$1 $(ls "outputs/$1" 2>/dev/null | tr '\n' ' ')" >> "$OUT/gpu.txt"
    fi
}
