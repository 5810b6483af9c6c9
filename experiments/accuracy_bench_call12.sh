#!/usr/bin/env bash
# Issue 25 and 27, GPU call 12 (one H100/H200, ~2-3 min: the session's last GPU minutes; as run: SMOKE=0, the
# session's budget left room for the picks only):
#   1. (issue 25) the search's EfficientFormerV2 picks chosen with the predictor refitted on call 11's fixed
#      supernet (picks_vs_references_archs_probe28.json), trained alone in the probe regime, seeds 0 and 1
#      (the references' three seeds are carried from calls 4-5);
#   2. (issue 27, with SMOKE=1) beside them, the smoke case call 3 ran out of time on: `hwnas_before`, our package loaded by
#      `load_aoti` in a library process without the preload (the probe must turn the crash into one line).
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
if [ "${SMOKE:-0}" = 1 ]; then
    cp experiments/results/aoti_gpu_smoke_fix.jsonl "$OUT/aoti_gpu_smoke.jsonl"
    python experiments/aoti_gpu_smoke.py --out "$OUT/aoti_gpu_smoke.jsonl" --work /tmp/aoti_smoke --cases hwnas_before \
        --deadline-s ${SMOKE_DEADLINE:-185} > "$OUT/aoti_smoke.log" 2>&1 &
fi
python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --spaces efficientformerv2 --variants none --sa-seeds 0,1 \
    --workers 6 --min-job-s 40 --deadline-s ${PICKS_DEADLINE:-125} --archs experiments/results/picks_vs_references_archs_probe28.json \
    --resume-from $R/h100-call4-efsupernet-probe/probe --resume-from $R/h100-call5-probe-all/p5 \
    --out "$OUT/picks" > "$OUT/picks.log" 2>&1
wait
mps_stop
cd "$OUT" && tar czf call12.tgz picks picks.log $(ls aoti_smoke.log aoti_gpu_smoke.jsonl 2>/dev/null) gpu.txt mps.txt && rm -rf picks && ls -la
