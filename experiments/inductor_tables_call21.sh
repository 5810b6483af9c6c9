#!/usr/bin/env bash
# Issue 27, GPU calls 21+ (one H100, a ~585 s command each): torch_inductor latency tables (every block, the fit
# networks and 100 held-out subnets per space, each compiled by AOTInductor in 14 worker processes, then timed
# in a CUDA graph), `experiments/profile_gpu.py --target torch_inductor`.
# Resumable across calls: the state lives in outputs/inductor_tables/ (git-ignored), every row written when
# measured; on a machine still warm from the previous call it is still there, with the compiled packages and
# Inductor's caches; on a fresh one it is unpacked from experiments/logs/inductor_state.tgz (copy the previous
# call's state.tgz there before the call: untracked files travel with the working tree). Run it again until
# progress.jsonl ends with "status": "done". Alone on the GPU.
#   SPACES="efficientformerv2" SET="autotune=false" CALL_S=585 bash experiments/inductor_tables_call21.sh
# Call 21 (with max_autotune, both spaces) ran past the command's limit: a compile under way did not stop at
# the deadline (fixed: compile_all now kills the workers at it); calls 22+ profile with autotune=false.
set -u
cd "$(dirname "$0")/.."
MPS=0 . experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
S=outputs/inductor_tables
unpack_state inductor_tables experiments/logs/inductor_state.tgz
mkdir -p "$S"
ls ~/.cache/hwnas/aoti 2>/dev/null | wc -l | sed 's/^/packages cached at start: /' >> "$OUT/gpu.txt"
LEFT=$(( ${CALL_S:-585} - ($(date +%s) - T0) - 20 ))
ARGS=(--target torch_inductor --out "$S" --resume "$S" --n-fit 30 --n-fidelity 100 --deadline-s $(( LEFT - 25 ))
      --set compile_workers=${WORKERS:-14})
for sp in ${SPACES:-efficientformerv2 nextvit}; do ARGS+=(--space "$sp"); done
for kv in ${SET:-}; do ARGS+=(--set "$kv"); done
timeout $LEFT python experiments/profile_gpu.py "${ARGS[@]}" > "$OUT/tables.log" 2>&1
echo "exit $?; call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
ls ~/.cache/hwnas/aoti 2>/dev/null | wc -l | sed 's/^/packages cached at end: /' >> "$OUT/gpu.txt"
tar czf "$OUT/state.tgz" -C outputs inductor_tables
grep -v "AUTOTUNE\|triton_\|select_algorithm\|^  convolution\|^strides\|^dtypes" "$OUT/tables.log" | tail -c 30000 > "$OUT/tables_tail.log"
gzip -f "$OUT/tables.log"
ls -la "$OUT"
