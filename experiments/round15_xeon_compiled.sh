#!/usr/bin/env bash
# Round 15, GPU call 15 (one H100/H200, <= 10 min), three independent jobs side by side on the GPU machine:
#  - issue 28: the shipped AMD EPYC onnxruntime_cpu tables adapted to this host's Intel Xeon (12 networks, the short
#    FAST loop), judged on 50 fresh held-out subnets timed LONGER (--held-out-set: up to 3 s / 100 runs a network
#    instead of 0.4 s / 20), since the held-out truth's own noise capped Next-ViT's tau at 0.941 in round 9.
#    One process per space, each pinned to its own core (3: Next-ViT; 5: EfficientFormerV2, which then also
#    profiles fully for the side-by-side comparison until the deadline);
#  - issue 27: experiments/deploy_speed.py --compiled for EfficientFormerV2-S0/S1 (our AOTInductor package as
#    shipped vs timm under torch.compile default / reduce-overhead), resuming the committed rows of this GPU
#    (cores 8-15: compiles);
#  - issue 27: the crash probe's `hwnas_before` smoke case (our package loaded without the preload, cores 10-15).
# What comes back is tarred (at most 8 files return).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:. || export PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
lscpu | grep -E "Model name|^CPU\(s\)" >> "$OUT/gpu.txt"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-')
HELD=(--held-out-set onnxruntime_cpu.repeats=100 --held-out-set onnxruntime_cpu.min_runs=30
      --held-out-set onnxruntime_cpu.max_seconds=${HELD_S:-3})
mkdir -p "$OUT/adapt_nv" "$OUT/adapt_ef" "$OUT/speed"
python experiments/latency_adapt.py --targets onnxruntime_cpu --spaces nextvit --cpu-core 3 "${HELD[@]}" \
    --out "$OUT/adapt_nv" --work /tmp/adapt_nv --deadline-s ${ADAPT_S:-520} > "$OUT/adapt_nv.log" 2>&1 &
python experiments/latency_adapt.py --targets onnxruntime_cpu --spaces efficientformerv2 --cpu-core 5 "${HELD[@]}" \
    --held-out-set onnxruntime_cpu.max_seconds=${HELD_S_EF:-1.5} --full-profile onnxruntime_cpu \
    --out "$OUT/adapt_ef" --work /tmp/adapt_ef --deadline-s ${ADAPT_S:-520} > "$OUT/adapt_ef.log" 2>&1 &
cp experiments/results/deploy_speed_compiled_nvidia-h*.jsonl "$OUT/speed/" 2>/dev/null
taskset -c 8-15 python experiments/deploy_speed.py --compiled --models efficientformerv2_s0 efficientformerv2_s1 \
    --modes default reduce-overhead --deadline-s ${SPEED_S:-330} --limit-s ${SPEED_LIMIT_S:-450} \
    --out "$OUT/speed/deploy_speed_compiled_$GPU" > "$OUT/speed.log" 2>&1 &
cp experiments/results/aoti_gpu_smoke_fix.jsonl "$OUT/aoti_gpu_smoke.jsonl"
taskset -c 10-15 python experiments/aoti_gpu_smoke.py --out "$OUT/aoti_gpu_smoke.jsonl" --work /tmp/aoti_smoke \
    --cases hwnas_before --deadline-s ${SMOKE_S:-200} > "$OUT/aoti_smoke.log" 2>&1 &
wait
echo "call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
cd "$OUT" && tar czf round15.tgz adapt_nv adapt_ef speed *.log aoti_gpu_smoke.jsonl gpu.txt \
    && rm -rf adapt_nv adapt_ef speed *.log aoti_gpu_smoke.jsonl && ls -la
