#!/usr/bin/env bash
# Round 9, GPU call 3 (one H100/H200, ~9 min), three independent jobs side by side:
#  - issue 28: latency_adapt.py -- the shipped AMD EPYC onnxruntime_cpu tables adapted to this host's Intel
#    Xeon (1 thread pinned to core 3, nothing else scheduled there) and the shipped H200 torch_cuda tables
#    adapted to this GPU, 50 fresh held-out subnets each, and a full torch_cuda profile beside it;
#  - issue 27: aoti_gpu_smoke.py -- AOTInductor loads before/after the libstdc++ fix (cores 4-13);
#  - issue 24: the two tests that failed on an Intel Xeon, run on this Intel host (2 cores, 14-15;
#    the test itself runs with 1 and 2 torch threads), with pytest from the carried wheels.
# What comes back is tarred (at most 8 files return).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
lscpu | grep -E "Model name|^CPU\(s\)" >> "$OUT/gpu.txt"
pip install -q --no-deps --no-build-isolation .whl/*.whl .whl/*.tar.gz > "$OUT/pip.log" 2>&1
mkdir -p "$OUT/adapt" "$OUT/intel"
python experiments/latency_adapt.py --out "$OUT/adapt" --work outputs/latency_adapt --cpu-core 3 \
    --deadline-s ${ADAPT_S:-320} --full-profile torch_cuda > "$OUT/adapt.log" 2>&1 &
taskset -c 4-13 python experiments/aoti_gpu_smoke.py --out "$OUT/aoti_gpu_smoke.jsonl" --work /tmp/aoti_smoke \
    --deadline-s ${AOTI_S:-400} > "$OUT/aoti.log" 2>&1 &
( taskset -c 14-15 timeout 300 python -m pytest -q -p no:cacheprovider \
      "tests/test_supernet.py::test_shared_slices_train_exactly_like_plain_slicing" \
      "tests/test_predictor.py::test_predictor_of_another_space_is_refused" > "$OUT/intel/pytest.txt" 2>&1
  echo "exit $?" >> "$OUT/intel/pytest.txt" ) &   # the test runs itself with 1 and 2 torch threads
wait
cd "$OUT" && tar czf round9_call3.tgz adapt intel adapt.log aoti.log pip.log && rm -rf adapt intel adapt.log pip.log && ls -la
