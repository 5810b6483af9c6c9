#!/usr/bin/env bash
# Issue 27, GPU calls 21+ (one H100, a ~590 s command each): the torch_inductor latency tables of both spaces
# (every block, the fit networks and 100 held-out subnets per space, each compiled by AOTInductor with the
# shipped settings -- max_autotune, depthwise=auto -- in 14 worker processes, then timed in a CUDA graph).
# Resumable across calls: the state lives in outputs/inductor_tables/ (git-ignored; carry it), every row written
# when measured; on a machine still warm from the previous call the compiled packages and Inductor's caches are
# reused too. Run it again until progress.jsonl ends with "status": "done". Alone on the GPU. No carry of .whl.
#   CALL_S=590 bash experiments/inductor_tables_call21.sh        (run: carry=["outputs/inductor_tables"])
set -u
cd "$(dirname "$0")/.."
MPS=0 . experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
S=outputs/inductor_tables
mkdir -p "$S"
ls ~/.cache/hwnas/aoti 2>/dev/null | wc -l | sed 's/^/packages cached at start: /' >> "$OUT/gpu.txt"
LEFT=$(( ${CALL_S:-590} - ($(date +%s) - T0) - 25 ))
python experiments/inductor_gpu.py --skip-speed --out "$S" --resume "$S" --workers ${WORKERS:-14} \
    --deadline-s $(( LEFT - 40 )) --limit-s $LEFT > "$OUT/tables.log" 2>&1
echo "exit $?; call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
ls ~/.cache/hwnas/aoti 2>/dev/null | wc -l | sed 's/^/packages cached at end: /' >> "$OUT/gpu.txt"
tar czf "$OUT/state.tgz" -C outputs inductor_tables
tail -c 20000 "$OUT/tables.log" > "$OUT/tables_tail.log"; gzip -f "$OUT/tables.log"
ls -la "$OUT"
