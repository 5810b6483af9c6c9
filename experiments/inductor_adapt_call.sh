#!/usr/bin/env bash
# Issue 27 point 2 through issue 28's adapt: torch_inductor tables adapted from the shipped torch_cuda (H200) table.
# Per space, N whole networks (24) compiled by AOTInductor (14 worker processes, a worker round ahead of their
# timing) and timed as shipped (package loaded single-threaded, replayed in a CUDA graph) fit the correction on
# top of torch_cuda's eager block rows; then HELD (100) fresh held-out subnets, compiled and timed the same way,
# measure its fidelity (issue 27's goal: >= 95 % within +-10 %, Kendall tau >= 0.9). Untuned compiles
# (autotune=false: 17-90 s a network against 92-190 s with max_autotune); the table records it and
# `hwnas.extract format=aoti` compiles as the table timed.
# Resumable across calls: the state lives in outputs/inductor_adapt/ (git-ignored); on a fresh machine it is
# unpacked from experiments/logs/inductor_adapt_state.tgz (copy the previous call's state.tgz there first:
# untracked files travel with the working tree). Alone on the GPU (MPS off). Env: SPACES, N, HELD, WORKERS,
# AUTOTUNE, CALL_S, MIN_S (330: the least time worth starting).
#   SPACES=efficientformerv2 CALL_S=570 bash experiments/inductor_adapt_call.sh
set -u
cd "$(dirname "$0")/.."
MPS=0 . experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
S=outputs/inductor_adapt
unpack_state inductor_adapt experiments/logs/inductor_adapt_state.tgz
mkdir -p "$S"
LEFT=$(( ${CALL_S:-570} - ($(date +%s) - T0) - 25 ))
# a compile round (~160 s untuned, 14 workers) and the process's first load and timing (~100 s) come before any
# network is measured (call 23): with less time than MIN_S the call would measure nothing, so it stops at once
if [ "$LEFT" -lt "${MIN_S:-330}" ]; then
    echo "only $LEFT s left of CALL_S=${CALL_S:-570}: under MIN_S=${MIN_S:-330}, nothing would be measured; not started" \
        | tee -a "$OUT/gpu.txt"
    exit 3
fi
SP=(); for sp in ${SPACES:-efficientformerv2}; do SP+=("$sp"); done
timeout $LEFT python experiments/latency_adapt.py --targets torch_inductor --spaces "${SP[@]}" \
    --n-adapt-gpu ${N:-24} --n-held-out ${HELD:-100} --deadline-s $(( LEFT - 30 )) --out "$S/results" --work "$S/tables" \
    --set torch_inductor.compile_workers=${WORKERS:-14} --set torch_inductor.autotune=${AUTOTUNE:-false} \
    > "$OUT/adapt.log" 2>&1
echo "exit $?; call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
tar czf "$OUT/state.tgz" -C outputs inductor_adapt
grep -v "AUTOTUNE\|triton_\|select_algorithm" "$OUT/adapt.log" | tail -c 30000 > "$OUT/adapt_tail.log"
gzip -f "$OUT/adapt.log"
ls -la "$OUT"
