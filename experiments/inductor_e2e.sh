#!/usr/bin/env bash
# Issue 27 point 4: `python -m hwnas.search +target=torch_inductor` and `python -m hwnas.extract format=aoti` end to
# end on the GPU machine, as a user runs them (the apps, not library calls), on EfficientFormerV2's adapted
# torch_inductor table (the one experiments/inductor_adapt_call.sh makes: outputs/inductor_adapt/, unpacked from
# experiments/logs/inductor_adapt_state.tgz on a fresh machine; or TABLE=). The search scores with the shipped
# predictor, which holds no weights, so the pick's weights come from a supernet trained here briefly
# (`python -m hwnas.train`, STEPS steps on Fashion-MNIST: a deployment check, not an accuracy). Then the exported
# package is run in a fresh Python without hwnas on its path, exactly as its manifest's `how` says (LD_PRELOAD of
# the system libstdc++, a CUDA graph), and compared with the package run plainly. Everything goes to $OUT/e2e.tgz
# (logs, report.md, picks.yaml, manifest.json). Env: TABLE, PICK (efficientformerv2_s1: the search's pick beside
# that reference), TRIALS (48), STEPS (200), CALL_S (570). Alone, or after inductor_adapt_call.sh in the same call,
# timed from the call's start (carry .data and .whl):
#   bash experiments/inductor_e2e.sh
#   export T0=$(date +%s); CALL_S=420 bash experiments/inductor_adapt_call.sh; bash experiments/inductor_e2e.sh
# Call 27 ran it once beside an MPS training script: search and training passed, the extract ran out of the call's
# time, and the training script's MPS stop hung on the compile workers left behind (mps_stop is now bounded). So it
# runs alone on the GPU, or after inductor_adapt_call.sh.
set -u
cd "$(dirname "$0")/.."
MPS=0 . experiments/gpu_call.sh   # an exported T0 (the call's start) is kept
unpack_state inductor_adapt experiments/logs/inductor_adapt_state.tgz
TABLE=${TABLE:-$(ls outputs/inductor_adapt/tables/torch_inductor/*.adapted.csv 2>/dev/null | head -1)}
E=outputs/e2e; rm -rf "$E"; mkdir -p "$E"
left() { local l=$(( ${CALL_S:-570} - ($(date +%s) - T0) - 20 )); echo $(( l > 1 ? l : 1 )); }  # timeout takes >= 1
{
    echo "table: $TABLE"
    python -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
    echo "--- search ($(left) s left)"
    timeout $(left) python -m hwnas.search +target=torch_inductor space=efficientformerv2 target.table="$TABLE" \
        search.n_trials=${TRIALS:-48} hydra.run.dir=$E/search; echo "search exit $?"
    echo "--- supernet, ${STEPS:-200} steps ($(left) s left)"
    timeout $(left) python -m hwnas.train space=efficientformerv2 data=fashion_mnist data.root=.data/fashion-mnist \
        data.image_size=32 train.epochs=1 train.max_steps_per_epoch=${STEPS:-200} train.batch_size=128 \
        train.progress=false hydra.run.dir=$E/train; echo "train exit $?"
    echo "--- extract ($(left) s left)"
    timeout $(left) python -m hwnas.extract run=$E/search pick=${PICK:-efficientformerv2_s1} 'format=[aoti]' batch=8 \
        checkpoint=$E/train/supernet.pt hydra.run.dir=$E/extract; echo "extract exit $?"
    echo "--- the package run as its manifest says, without hwnas ($(left) s left)"
    ( cd $E/extract && timeout $(left) env -u PYTHONPATH LD_PRELOAD="$(readlink -f "$(g++ -print-file-name=libstdc++.so.6)")" python - <<'EOF'
import json, torch
m = json.load(open("manifest.json"))
a = m["formats"]["aoti"]["check"]
print("needs:", json.dumps(a.get("needs")))
print("predicted ms (batch 8 tables):", json.dumps(m.get("predicted_latency_ms")))
print("how:\n" + a["how"])
code = a["how"].split("\n", 1)[1].split("If loading dies")[0]
shape = tuple(a["input"]["shape"])
ns = {}
exec(code, ns)                                   # the manifest's recipe, verbatim
x, g, y = ns["x"], ns["g"], ns["y"]
torch.manual_seed(0); batch = torch.randn(shape, device="cuda")
x.copy_(batch); g.replay(); torch.cuda.synchronize(); logits = y.clone()
ref = torch._inductor.aoti_load_package("model.pt2")(batch)
print("graph replay vs plain run: max abs diff", (logits - ref).abs().max().item(), "shape", tuple(logits.shape))
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
ts = []
for _ in range(200):
    start.record(); g.replay(); end.record(); end.synchronize(); ts.append(start.elapsed_time(end))
ts.sort(); print(f"replay ms: median {ts[100]:.4f}, p10 {ts[20]:.4f} ({torch.cuda.get_device_name()}, torch {torch.__version__})")
EOF
    ); echo "without-hwnas exit $?"
} > "$OUT/e2e.log" 2>&1
echo "e2e: $(( $(date +%s) - T0 )) s" >> "$OUT/gpu.txt"
tar czf "$OUT/e2e.tgz" --exclude='*.pt2' --exclude='*.pt' --exclude='*.onnx' --exclude='study.db' -C outputs e2e
ls -la "$OUT"
