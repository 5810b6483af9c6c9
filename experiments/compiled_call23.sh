#!/usr/bin/env bash
# Issue 27, GPU call 23 (prepared; not run in the tenth session) (one H100/H200, a ~530 s command): the compiled deploy-speed table with the shipped
# defaults as one package per cell (depthwise=auto, autotune=true: what `extract format=aoti` ships since round
# 17), Next-ViT-S and EfficientFormerV2-S0/S1 at batch 1 and 8, against timm under torch.compile default and
# reduce-overhead, all in one run. Rows already holding the shipped form are kept (a rerun resumes). Alone on
# the GPU. Carry .whl.   CALL_S=530 bash experiments/compiled_call23.sh
set -u
cd "$(dirname "$0")/.."
MPS=0 . experiments/gpu_call.sh
lscpu | grep -E "Model name" >> "$OUT/gpu.txt"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-')
mkdir -p "$OUT/speed" && cp experiments/results/deploy_speed_compiled_nvidia-h*.jsonl "$OUT/speed/" 2>/dev/null
LEFT=$(( ${CALL_S:-530} - ($(date +%s) - T0) - 3 ))
timeout $LEFT taskset -c 2-15 python experiments/deploy_speed.py --compiled --models ${MODELS:-efficientformerv2_s0 efficientformerv2_s1 nextvit_s} \
    --batches ${BATCHES:-1 8} --modes default reduce-overhead --workers 6 \
    --deadline-s $(( LEFT - 40 )) --limit-s $LEFT --out "$OUT/speed/deploy_speed_compiled_$GPU" > "$OUT/speed.log" 2>&1
echo "call: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
cd "$OUT" && tar czf call23.tgz speed speed.log gpu.txt mps.txt && rm -rf speed && ls -la
