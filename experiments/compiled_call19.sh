#!/usr/bin/env bash
# Issue 27, GPU calls 19-20 (one H100/H200, a ~590 s command): timm under torch.compile(mode="max-autotune") vs our
# AOTInductor package as shipped, with depthwise=shifted, and with depthwise=shifted + Inductor's max_autotune
# (GEMM/conv templates benchmarked at compile time), EfficientFormerV2-S0 batch 1 first (then -S1, Next-ViT-S while
# the 560 s a max-autotune compile is given fits: in practice one row per call). Rows of a `--modes max-autotune`
# run are rows of their own in deploy_speed_compiled_<gpu>.jsonl. Alone on the GPU. Carry .whl.
#   CALL_S=592 bash experiments/compiled_call19.sh
# Sized by env: MODELS, BATCHES, MODES (timm's), VARIANTS (ours besides the shipped package; "" for none), TAG.
# Call 23 (written in the tenth session, not run yet): the shipped defaults (depthwise=auto, autotune) as one
# package per cell vs timm default and reduce-overhead, all six cells in one run:
#   TAG=call23 MODES="default reduce-overhead" VARIANTS="sdpa:attention=sdpa" BATCHES="1 8" CALL_S=530 bash experiments/compiled_call19.sh
# (the sdpa variant: attention as one scaled_dot_product_attention call, the package and -- in every run since
# the setting exists -- the eager recipe; written in the fifteenth session, not run yet)
set -u
cd "$(dirname "$0")/.."
MPS=0 . experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-')
mkdir -p "$OUT/speed" && cp experiments/results/deploy_speed_compiled_nvidia-h*.jsonl "$OUT/speed/" 2>/dev/null
VARIANTS=${VARIANTS-"shifted:depthwise=shifted shifted_mat:depthwise=shifted,inductor.max_autotune=true"}
OURS=(); for v in $VARIANTS; do OURS+=(--ours-variant "$v"); done
LEFT=$(( ${CALL_S:-592} - ($(date +%s) - T0) - 3 ))
timeout $LEFT taskset -c 2-15 python experiments/deploy_speed.py --compiled \
    --models ${MODELS:-efficientformerv2_s0 efficientformerv2_s1 nextvit_s} --batches ${BATCHES:-1} \
    --modes ${MODES:-max-autotune} "${OURS[@]}" --workers 6 \
    --deadline-s $(( LEFT - 60 )) --limit-s $LEFT --out "$OUT/speed/deploy_speed_compiled_$GPU" > "$OUT/speed.log" 2>&1
echo "call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
cd "$OUT" && tar czf ${TAG:-call19}.tgz speed speed.log gpu.txt mps.txt && rm -rf speed && ls -la
