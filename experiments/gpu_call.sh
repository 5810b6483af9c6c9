# Sourced by the GPU call scripts (issue 25): the GPU machine's setup and the predictor-pairs step they share.
#   . experiments/gpu_call.sh    -> wheels of .whl/ installed (PYTHONPATH), $OUT/gpu.txt, CUDA MPS (experiments/mps.sh)
#   run_pairs CKPT SECONDS SEED0 N DIR   -> N `hwnas.predictor pairs` processes on the supernet CKPT (seeds SEED0+1..N)
#                                  on the probe data, each line written when measured, all stopped after SECONDS
export PYTHONUNBUFFERED=1
T0=${T0:-$(date +%s)}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:. || export PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt"
. experiments/mps.sh

run_pairs() {
    local ck=$1 left=$2 seed0=$3 n=$4 dir=$5
    mkdir -p "$dir"
    echo "checkpoint: $ck; pairs: $left s" >> "$dir/checkpoints.txt"
    { [ -n "$ck" ] && [ "$left" -gt 40 ]; } || return 0
    for k in $(seq 1 "$n"); do
        timeout "$left" python -m hwnas.predictor pairs --checkpoint "$ck" --n 400 --seed $((seed0 + k)) --batch-size 500 \
            --data name=fashion_mnist root=.data/fashion-mnist image_size=32 limit_train=10000 val_size=10000 \
            --out "$dir/ef_$k.jsonl" > "$dir/ef_$k.log" 2>&1 &
    done
}
