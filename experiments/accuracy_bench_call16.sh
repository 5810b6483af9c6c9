#!/usr/bin/env bash
# Issues 25 and 28, GPU call 16 (one H100/H200, <= 10 min; WRITTEN, NOT RUN), three jobs side by side:
#  1. (issue 25, GPU, cores 8-15) Next-ViT's picks chosen with the refitted predictor (held-out tau 0.758;
#     picks_vs_references_archs_nextvit_probe32.json: S -> ee26c6dd3a21, B and L -> b49097b54fae), trained alone
#     in the probe regime, seeds 0 and 1; the references' seeds are carried from calls 5, 7 and 8.
#  2. (issue 28, Xeon core 3) EfficientFormerV2's adapt to this host again, the held-out truth timed longer
#     (a second sample of round 15's tau 0.925; round 9: 0.954).
#  3. (issue 28, Xeon core 5) the side-by-side full profile of EfficientFormerV2 on this host by the app
#     (every block + 30 fit networks; ~7-8 min on one AMD EPYC core), scored afterwards on item 2's held-out
#     networks: python experiments/latency_adapt.py --score-full-table ... --result ... (run at the end here too).
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
mkdir -p "$OUT/adapt_ef" "$OUT/full"
python experiments/latency_adapt.py --targets onnxruntime_cpu --spaces efficientformerv2 --cpu-core 3 \
    --held-out-set onnxruntime_cpu.repeats=100 --held-out-set onnxruntime_cpu.min_runs=30 \
    --held-out-set onnxruntime_cpu.max_seconds=1.5 --out "$OUT/adapt_ef" --work /tmp/adapt_ef \
    --deadline-s ${ADAPT_S:-300} > "$OUT/adapt_ef.log" 2>&1 &
( t=$(date +%s); timeout ${FULL_S:-540} taskset -c 5 python -m hwnas.profile +target=onnxruntime_cpu space=efficientformerv2 \
      tables_dir="$OUT/full" progress=false > "$OUT/full.log" 2>&1
  echo "exit $? after $(( $(date +%s) - t )) s" >> "$OUT/full.log" ) &
taskset -c 8-15 python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --spaces nextvit --variants none --sa-seeds 0,1 \
    --workers 4 --min-job-s 40 --deadline-s ${PICKS_DEADLINE:-300} \
    --archs experiments/results/picks_vs_references_archs_nextvit_probe32.json \
    --resume-from $R/h100-call5-probe-all/p5 --resume-from $R/h100-call7-nextvit-seed2/p5 \
    --resume-from $R/h100-call8-nextvit-seed2b/p5 --out "$OUT/picks" > "$OUT/picks.log" 2>&1
wait
mps_stop
full=$(ls "$OUT"/full/onnxruntime_cpu/*.csv 2>/dev/null | grep -v -e partial -e networks | head -1)
[ -n "$full" ] && python experiments/latency_adapt.py --score-full-table "$full" \
    --result "$OUT/adapt_ef/latency_adapt_onnxruntime_cpu_efficientformerv2.json" >> "$OUT/full.log" 2>&1
cd "$OUT" && tar czf call16.tgz picks adapt_ef full *.log gpu.txt mps.txt && rm -rf picks adapt_ef full && ls -la
