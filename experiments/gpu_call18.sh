#!/usr/bin/env bash
# Issues 27 and 28, GPU call 18 (one H100/H200, sized by CALL_S, default 540 s), side by side:
#  1. (issue 28, Xeon core 1) Next-ViT's full onnxruntime_cpu profile on this host, resumed from call 16's partial
#     table (357 of 396 blocks: experiments/results/latency_adapt_full_tables/intel-xeon-r17/nextvit-partial), then
#     its fit networks; scored on item 2's held-out subnets (--score-full-table, in their canary units).
#  2. (issue 28, Xeon core 3) Next-ViT's adapt to this host (12 networks, 50 held-out subnets timed long), at the
#     same time as 1, so that the two are compared on one host instance.
#  3. (issue 27, GPU, cores 6-15) experiments/deploy_speed.py --compiled: EfficientFormerV2-S0 batch 8's missing
#     timm mode, then -S1 and Next-ViT-S at batch 1 and 8, our package as shipped and with depthwise=shifted, vs
#     timm compiled (default, reduce-overhead), resuming the committed rows, until the call's deadline.
# Carry .whl (the wheels; deploy_speed preloads g++'s libstdc++ itself).
set -u
cd "$(dirname "$0")/.."
MPS=0 . experiments/gpu_call.sh  # no MPS: deploy_speed times alone on the GPU
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-')
mkdir -p "$OUT/full_nv" "$OUT/adapt_nv" "$OUT/speed"
cp -r experiments/results/latency_adapt_full_tables/intel-xeon-r17/nextvit-partial/onnxruntime_cpu "$OUT/full_nv/"
( t=$(date +%s); timeout ${FULL_S:-480} taskset -c 1 python -m hwnas.profile +target=onnxruntime_cpu space=nextvit \
      tables_dir="$OUT/full_nv" progress=false > "$OUT/full_nv.log" 2>&1
  echo "exit $? after $(( $(date +%s) - t )) s (resumed from call 16's 357 blocks)" >> "$OUT/full_nv.log" ) &
FULL_PID=$!
python experiments/latency_adapt.py --targets onnxruntime_cpu --spaces nextvit --cpu-core 3 \
    --held-out-set onnxruntime_cpu.repeats=100 --held-out-set onnxruntime_cpu.min_runs=30 \
    --held-out-set onnxruntime_cpu.max_seconds=2 --out "$OUT/adapt_nv" --work /tmp/adapt_nv \
    --deadline-s ${ADAPT_S:-400} > "$OUT/adapt_nv.log" 2>&1 &
ADAPT_PID=$!
cp experiments/results/deploy_speed_compiled_nvidia-h*.jsonl "$OUT/speed/" 2>/dev/null
LEFT=$(( ${CALL_S:-540} - ($(date +%s) - T0) - 15 ))
taskset -c 6-15 python experiments/deploy_speed.py --compiled \
    --models efficientformerv2_s0 efficientformerv2_s1 nextvit_s --batches 1 8 --modes default reduce-overhead \
    --ours-variant shifted:depthwise=shifted --workers 10 --deadline-s $(( LEFT - 90 )) --limit-s $LEFT \
    --out "$OUT/speed/deploy_speed_compiled_$GPU" > "$OUT/speed.log" 2>&1
wait $ADAPT_PID $FULL_PID
full=$(ls "$OUT"/full_nv/onnxruntime_cpu/*.csv 2>/dev/null | grep -v -e partial -e networks | head -1)
[ -n "$full" ] && python experiments/latency_adapt.py --score-full-table "$full" \
    --result "$OUT/adapt_nv/latency_adapt_onnxruntime_cpu_nextvit.json" >> "$OUT/full_nv.log" 2>&1
echo "call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
cd "$OUT" && tar czf call18.tgz full_nv adapt_nv speed *.log gpu.txt mps.txt && rm -rf full_nv adapt_nv speed && ls -la
