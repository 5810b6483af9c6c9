# Sourced by the GPU call scripts: start the CUDA MPS control daemon so that the kernels of several worker
# processes run side by side on the one GPU (small models at 32 px leave most of it idle when processes
# only time-slice). Falls back to plain time-slicing when the daemon cannot start or a client cannot
# reach it; writes what happened to $OUT/mps.txt. `mps_stop` quits the daemon. MPS=0: off (and stopped).
export CUDA_MPS_PIPE_DIRECTORY=/tmp/hwnas_mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/hwnas_mps_log
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
# quit waits for the daemon's clients: bounded, so that a client still alive (a compile worker of a killed
# process, call 27) cannot hold the call past its limit before its results are packed
mps_stop() { echo quit | timeout 10 nvidia-cuda-mps-control >/dev/null 2>&1 || true; }
if [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d \
        && timeout 60 python -c "import torch; x = torch.ones(4, device='cuda'); assert x.sum().item() == 4"; then
    echo "MPS on ($(command -v nvidia-cuda-mps-control))" | tee "$OUT/mps.txt"
else
    mps_stop
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS off (daemon missing or unusable): worker processes time-slice the GPU" | tee "$OUT/mps.txt"
    cat /tmp/hwnas_mps_log/control.log 2>/dev/null | tail -5 >> "$OUT/mps.txt"
fi
