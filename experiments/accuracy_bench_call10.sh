#!/usr/bin/env bash
# Issue 25, GPU call 10 (one H100/H200, <= 10 min), side by side under CUDA MPS:
#   1. EfficientFormerV2 supernets on the probe benchmark, seed 0, batch 512, lr 1e-3, 28 epochs instead of
#      call 6's 20 (its largest subnet's val top-1 still rose in the last epochs; inherited top-1 sat 1.1-1.8
#      points under stand-alone for the references, 2.6-3.8 for the archs up to ~410 MMACs):
#      a. `studentw` (call 6's recipe, longer): what does length alone buy?
#      b. `strata` (studentw + train.macs_strata): do random subnets drawn per band of log MACs close the small end?
#      Both score the 24 ranking archs; the stand-alone seeds 0-2 are carried from calls 4-6.
#   2. A Next-ViT pilot of longer stand-alone training: 6 of its ranking archs spread over MACs
#      (accuracy_bench_nv_pilot_archs.json) x seeds 0, 1, 45 epochs on the same 10,000 images (20 epochs left
#      the larger archs with the higher training loss: are they still converging, and do they separate then?).
set -u
cd "$(dirname "$0")/.."
. experiments/gpu_call.sh
W=/tmp/w10
ef=("${PROBE[@]}" --spaces efficientformerv2 --sa-seeds 0,1,2 --workers 0 --seed 0 --sn-epochs ${SN_EPOCHS:-28}
    --sn-batch 512 --sn-lr 1e-3 --random-archs 0 --eval-s-per-arch 2 --deadline-s ${SN_DEADLINE:-545}
    --archs experiments/results/accuracy_bench_archs.json
    --resume-from $R/h100-call4-efsupernet-probe/probe --resume-from $R/h100-call5-probe-all/p5
    --resume-from $R/h100-call6-efsupernet20/ef)
python experiments/ranking_fidelity.py gpu "${PROBE[@]}" --sa-epochs ${NV_EPOCHS:-45} --spaces nextvit --variants none \
    --sa-seeds 0,1 --workers 12 --deadline-s ${NV_DEADLINE:-560} --archs experiments/results/accuracy_bench_nv_pilot_archs.json \
    --out "$OUT/nv" > "$OUT/nv.log" 2>&1 &
python experiments/ranking_fidelity.py gpu "${ef[@]}" --variants studentw --out "$OUT/efw" --work $W/efw > "$OUT/efw.log" 2>&1 &
python experiments/ranking_fidelity.py gpu "${ef[@]}" --variants strata --out "$OUT/efs" --work $W/efs > "$OUT/efs.log" 2>&1
wait
mps_stop
cd "$OUT" && tar czf call10.tgz efw efs nv efw.log efs.log nv.log gpu.txt mps.txt && rm -rf efw efs nv && ls -la
