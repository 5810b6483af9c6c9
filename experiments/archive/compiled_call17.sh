#!/usr/bin/env bash
# Never run: superseded by experiments/gpu_call18.sh and compiled_call19.sh (2026-12-07). Issue 27, GPU call 17 (one H100/H200, sized by CALL_S, default 330 s): experiments/deploy_speed.py --compiled for
# EfficientFormerV2-S0 (then -S1, Next-ViT-S while time is left), our AOTInductor package as shipped and compiled with
# depthwise=shifted (hwnas.convert.optimize.ShiftedDepthwiseConv2d: each depthwise convolution as k*k multiply-adds
# that Inductor fuses with its bias and activation, instead of cuDNN's grouped kernel: 23 % of S0's GPU time in
# call 15) vs timm under torch.compile (default, reduce-overhead), resuming this GPU's committed rows. Alone on the GPU.
# Carry .whl (installed as the other calls do; deploy_speed preloads g++'s libstdc++ itself).
set -u
cd "$(dirname "$0")/../.."
MPS=0 . experiments/gpu_call.sh  # the carried wheels, $OUT/gpu.txt, $T0; no MPS: deploy_speed times alone
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-')
mkdir -p "$OUT/speed" && cp experiments/results/deploy_speed_compiled_nvidia-h*.jsonl "$OUT/speed/" 2>/dev/null
LEFT=$(( ${CALL_S:-330} - ($(date +%s) - T0) - 15 ))
taskset -c 2-15 python experiments/deploy_speed.py --compiled \
    --models efficientformerv2_s0 efficientformerv2_s1 nextvit_s --batches ${BATCHES:-1 8} --modes default reduce-overhead \
    --ours-variant shifted:depthwise=shifted --workers 12 --deadline-s $(( LEFT - 90 )) --limit-s $LEFT \
    --out "$OUT/speed/deploy_speed_compiled_$GPU" > "$OUT/speed.log" 2>&1
echo "call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
cd "$OUT" && tar czf call17.tgz speed speed.log gpu.txt mps.txt && rm -rf speed speed.log && ls -la
