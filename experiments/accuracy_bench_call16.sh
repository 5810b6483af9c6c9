#!/usr/bin/env bash
# Issues 25, 27 and 28, GPU call 16 (one H100/H200, <= 10 min), jobs side by side:
#  1. (issue 25, GPU, cores 8-15) Next-ViT's picks chosen with the refitted predictor (held-out tau 0.758;
#     picks_vs_references_archs_nextvit_probe32.json: S -> ee26c6dd3a21, B and L -> b49097b54fae), trained alone
#     in the probe regime, seeds 0 and 1; the references' seeds are carried from calls 5, 7 and 8.
#  2. (issue 28, Xeon core 3) EfficientFormerV2's adapt to this host again, the held-out truth timed longer
#     (a second sample of round 15's tau 0.925; round 9: 0.954).
#  3. (issue 28, Xeon core 5) the side-by-side full profile of EfficientFormerV2 on this host by the app
#     (every block + 30 fit networks; ~7-8 min on one AMD EPYC core), scored afterwards on item 2's held-out
#     networks: python experiments/latency_adapt.py --score-full-table ... --result ... (run at the end here too).
#  4. (issue 28, Xeon core 6) Next-ViT's full profile on this host (396 blocks: longer than one call; its
#     <device>.partial.* files come back, and `tables_dir=` on them resumes it in a later call).
#  5. (issue 27, GPU, cores 8-15) once 1 and 2 are done (its compiles would disturb 2's timing):
#     experiments/deploy_speed.py --compiled for EfficientFormerV2-S0/S1 and Next-ViT-S, our package as shipped
#     and compiled with depthwise=shifted (the k*k multiply-adds Inductor fuses) vs timm compiled, resuming this
#     GPU's committed rows, until the call's deadline (CALL_S, default 570 s from the start).
# Sized by env: CALL_S (the whole call, default 570 s), FULL_S (the full profiles; 0 skips them), PICKS_DEADLINE.
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
mkdir -p "$OUT/adapt_ef" "$OUT/full" "$OUT/full_nv"
python experiments/latency_adapt.py --targets onnxruntime_cpu --spaces efficientformerv2 --cpu-core 3 \
    --held-out-set onnxruntime_cpu.repeats=100 --held-out-set onnxruntime_cpu.min_runs=30 \
    --held-out-set onnxruntime_cpu.max_seconds=1.5 --out "$OUT/adapt_ef" --work /tmp/adapt_ef \
    --deadline-s ${ADAPT_S:-300} > "$OUT/adapt_ef.log" 2>&1 &
ADAPT_PID=$!
[ "${FULL_S:-540}" -gt 0 ] && ( t=$(date +%s); timeout ${FULL_S:-540} taskset -c 5 python -m hwnas.profile +target=onnxruntime_cpu space=efficientformerv2 \
      tables_dir="$OUT/full" progress=false > "$OUT/full.log" 2>&1
  echo "exit $? after $(( $(date +%s) - t )) s" >> "$OUT/full.log" ) &
[ "${FULL_S:-540}" -gt 0 ] && ( t=$(date +%s); timeout ${FULL_S:-540} taskset -c 6 python -m hwnas.profile +target=onnxruntime_cpu space=nextvit \
      tables_dir="$OUT/full_nv" progress=false > "$OUT/full_nv.log" 2>&1
  echo "exit $? after $(( $(date +%s) - t )) s" >> "$OUT/full_nv.log" ) &
taskset -c 8-15 python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --spaces nextvit --variants none --sa-seeds 0,1 \
    --workers 4 --min-job-s 40 --deadline-s ${PICKS_DEADLINE:-300} \
    --archs experiments/results/picks_vs_references_archs_nextvit_probe32.json \
    --resume-from $R/h100-call5-probe-all/p5 --resume-from $R/h100-call7-nextvit-seed2/p5 \
    --resume-from $R/h100-call8-nextvit-seed2b/p5 --out "$OUT/picks" > "$OUT/picks.log" 2>&1
mps_stop
unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY  # deploy_speed times alone, without MPS
wait $ADAPT_PID
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-')
mkdir -p "$OUT/speed" && cp experiments/results/deploy_speed_compiled_nvidia-h*.jsonl "$OUT/speed/" 2>/dev/null
LEFT=$(( ${CALL_S:-570} - ($(date +%s) - T0) ))
echo "deploy_speed: $LEFT s left" >> "$OUT/gpu.txt"
[ "$LEFT" -gt 150 ] && taskset -c 8-15 python experiments/deploy_speed.py --compiled \
    --models efficientformerv2_s0 efficientformerv2_s1 nextvit_s --modes default reduce-overhead \
    --ours-variant shifted:depthwise=shifted --workers 8 --deadline-s $(( LEFT - 100 )) --limit-s $(( LEFT - 10 )) \
    --out "$OUT/speed/deploy_speed_compiled_$GPU" > "$OUT/speed.log" 2>&1
wait
full=$(ls "$OUT"/full/onnxruntime_cpu/*.csv 2>/dev/null | grep -v -e partial -e networks | head -1)
[ -n "$full" ] && python experiments/latency_adapt.py --score-full-table "$full" \
    --result "$OUT/adapt_ef/latency_adapt_onnxruntime_cpu_efficientformerv2.json" >> "$OUT/full.log" 2>&1
cd "$OUT" && tar czf call16.tgz picks adapt_ef full full_nv speed *.log gpu.txt mps.txt && rm -rf picks adapt_ef full full_nv speed && ls -la
