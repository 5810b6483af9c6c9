"""An ESTIMATED Core ML (iPhone 12) latency table: a per-block cost model fitted to published numbers.

No Apple device is reachable from the project's machines, so the coreml table is not measured.
Each block gets features from its BN-folded ONNX graph (fp16): multiply-accumulates, activation
traffic (bytes written by every op), weight bytes and op count. A network's latency is modelled as

    t(net) = c0 + Σ_blocks (c_mac·MACs + c_act·act_bytes + c_w·weight_bytes + c_op·ops),  c ≥ 0

fitted (non-negative least squares on relative error) to the seven published iPhone 12 CoreML
latencies (Next-ViT-S/B/L 3.48/4.48/5.35 ms on an iPhone 12 Pro Max, EfficientFormerV2-S0/S1/S2/L
0.9/1.1/1.6/2.7 ms). Leave-one-out error on those seven is stored with the table; it is the only
evidence of the estimate's quality. A table measured on a Mac (`coreml_bundle`) replaces it.

    python -m hwnas.latency.coreml_cost [--out latency_tables/coreml/iphone-12-estimated.csv]
    python -m hwnas.latency.coreml_cost --add-missing     # rows for blocks the spaces gained since

`--add-missing` keeps the table and its cost model and adds rows for the blocks `all_blocks()` has
and the table lacks (e.g. the NTB variants of issue 17), after checking that the stored
coefficients still give every reference arch's stored rows from the current code's graphs (else it
refuses and says to rebuild); `provenance.rows_added` records what was added.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import search_spaces

from hwnas._files import owned_temp_dir
from hwnas._progress import progress_bar

from .errors import LatencyTableError
from .profiler import now_iso
from .table import TABLES_DIR, LatencyTable

PUBLISHED_MS = {  # ARCHITECTURES.md: Next-ViT README (Xcode report image), EfficientFormerV2 README
    "nextvit_s": 3.48, "nextvit_b": 4.48, "nextvit_l": 5.35,
    "efficientformerv2_s0": 0.9, "efficientformerv2_s1": 1.1, "efficientformerv2_s2": 1.6,
    "efficientformerv2_l": 2.7,
}
MOBILENETV2_PUBLISHED_MS = 0.9  # ARCHITECTURES.md §2.5: "about 0.9 ms", as both EfficientFormer papers report; unverified
FEATURES = ("macs", "act_bytes", "weight_bytes", "ops")
_SKIP_OPS = {"Constant", "Identity", "Shape", "Cast", "Unsqueeze", "Squeeze"}


def graph_features(model, input_shape) -> dict:
    """Op count and fp16 byte traffic of a module's BN-folded ONNX graph, plus its MACs."""
    import onnx
    from onnx import numpy_helper, shape_inference
    from hwnas.convert.onnx import export_onnx
    from .deploy import deploy_form

    model = deploy_form("coreml").module(model)
    with owned_temp_dir("cost") as d:
        path = export_onnx(model, input_shape, Path(d) / "m.onnx")
        g = shape_inference.infer_shapes(onnx.load(str(path))).graph
    sizes = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        sizes[vi.name] = int(np.prod(dims)) if dims and all(dims) else 0
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    ops = [n for n in g.node if n.op_type not in _SKIP_OPS]
    act = sum(sizes.get(o, 0) for n in ops for o in n.output)
    weight = sum(a.size for a in inits.values() if a.size > 1)
    macs = 0
    for n in ops:  # conv / gemm / matmul MACs from shapes (the spaces' analytic counts agree)
        out = sizes.get(n.output[0], 0)
        if n.op_type == "Conv" and n.input[1] in inits:
            w = inits[n.input[1]]
            macs += out * int(np.prod(w.shape[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            k = None
            if n.input[1] in inits:
                k = inits[n.input[1]].shape[0] if n.op_type == "MatMul" else inits[n.input[1]].shape[-1]
            else:
                for vi in g.value_info:
                    if vi.name == n.input[0]:
                        k = vi.type.tensor_type.shape.dim[-1].dim_value
            macs += out * (k or 0)
    return {"macs": float(macs), "act_bytes": 2.0 * act, "weight_bytes": 2.0 * weight, "ops": float(len(ops))}


def block_features(specs, progress: bool = True) -> dict[str, dict]:
    import supernet
    out = {}
    for s in progress_bar(specs, len(specs), "block features", progress):
        out[s.key] = graph_features(supernet.build_block(s), supernet.block_input_shape(s, 1))
    return out


def _design(archs, feats) -> np.ndarray:
    from .keys import block_keys
    return np.array([[sum(feats[k][f] for k in block_keys(a)) for f in FEATURES] for a in archs])


def fit_nnls(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative c (per feature) and c0 minimising Σ ((X c + c0 − y) / y)²."""
    from scipy.optimize import nnls
    scale = X.max(0)
    scale[scale == 0] = 1
    A = np.concatenate([X / scale, np.ones((len(y), 1))], 1) / y[:, None]
    sol, _ = nnls(A, np.ones_like(y))
    return sol[:-1] / scale, float(sol[-1])


def build_estimated_table(out: Path, progress: bool = True) -> LatencyTable:
    spaces = [search_spaces.get_space(n) for n in ("nextvit", "efficientformerv2")]
    refs = {n: sp.reference(n) for sp in spaces for n in sp.reference_names}
    specs_by_key = {s.key: s for sp in spaces for s in sp.all_blocks()}
    specs = list(specs_by_key.values())
    feats = block_features(specs, progress)
    names = list(PUBLISHED_MS)
    X = _design([refs[n] for n in names], feats)
    y = np.array([PUBLISHED_MS[n] for n in names])
    c, c0 = fit_nnls(X, y)
    loo = {}
    for i, n in enumerate(names):
        m = np.arange(len(y)) != i
        ci, c0i = fit_nnls(X[m], y[m])
        loo[n] = float(X[i] @ ci + c0i)
    loo_err = {n: (loo[n] - PUBLISHED_MS[n]) / PUBLISHED_MS[n] for n in names}
    fitted = {n: float(X[i] @ c + c0) for i, n in enumerate(names)}

    from .reference_models import mobilenet_v2
    mnv2 = graph_features(mobilenet_v2(), (1, 3, 224, 224))
    mnv2_ms = float(np.array([mnv2[f] for f in FEATURES]) @ c + c0)

    from .deploy import deploy_form
    from .fingerprint import block_fingerprint, scheme_info
    form = deploy_form("coreml", batch=1, precision="fp16")
    rows = {}
    for k, f in feats.items():
        t = float(np.array([f[x] for x in FEATURES]) @ c)
        rows[k] = {"median_ms": t, "p10_ms": t, "spread": 0.0, "runs": 0,
                   "fingerprint": block_fingerprint(specs_by_key[k], form)}
    loo_mape = float(np.mean(np.abs(list(loo_err.values()))))
    prov = {
        "target": "coreml", "source": "estimated", "runtime": "coremltools (Core ML, ML Program)",
        "runtime_version": "n/a (not measured)", "device": "iPhone 12 (A14), estimated", "device_slug": "iphone-12-estimated",
        "precision": "fp16", "batch": 1, "threads": None, "warmup": None, "repeats": None,
        "deploy_form": form.describe(), "fingerprint": {**scheme_info(), "form": form.settings()},
        "complete": {s.name: True for s in spaces},
        "statistic": "median_ms", "date": now_iso(), "spaces": [s.name for s in spaces],
        "method": ("per-block cost model t = c_mac·MACs + c_act·activation bytes + c_w·weight bytes + c_op·ops "
                   "(features from each BN-folded block's ONNX graph, fp16), plus a per-network constant c0; "
                   "non-negative least squares on relative error against 7 published iPhone 12 CoreML latencies"),
        "cost_model": {
            "features": list(FEATURES), "coefficients_ms_per_unit": dict(zip(FEATURES, map(float, c))),
            "c0_ms": c0, "published_ms": PUBLISHED_MS, "fitted_ms": fitted, "loo_predicted_ms": loo,
            "loo_pct_error": loo_err, "loo_mape": loo_mape,
            "fit_mape": float(np.mean([abs(fitted[n] - PUBLISHED_MS[n]) / PUBLISHED_MS[n] for n in names])),
            "sources": "Next-ViT README (iPhone 12 Pro Max, iOS 16, Xcode 14 performance report); "
                       "EfficientFormerV2 README (iPhone 12, iOS 16, Xcode 14); see shared/reference/ARCHITECTURES.md",
            "caveats": "7 data points from two families and two papers' export pipelines (coremltools 5.2, "
                       "Neural Network format), not the ML Program this project exports; block-level numbers "
                       "are model outputs, never measured. Treat rankings within a family as rough and "
                       "absolute numbers as +-{:.0f}% (leave-one-out).".format(100 * loo_mape),
        },
        "correction": {s.name: {"form": "scale", "a": {}, "a_default": 1.0, "b": c0,
                                "equation": "t = Σ block estimates + c0 (c0 from the cost model)"} for s in spaces},
        "fidelity": {},
        "mes_unit_latency_ms": MOBILENETV2_PUBLISHED_MS,
        "mes_unit": {"model": "MobileNetV2 x1.0", "source": "published figure, unverified",
                     "value_ms": MOBILENETV2_PUBLISHED_MS,
                     "note": "ARCHITECTURES.md §2.5: about 0.9 ms on iPhone 12 as both EfficientFormer papers "
                             "report it (unverified). The cost model's own estimate is cost_model_estimate_ms.",
                     "cost_model_estimate_ms": mnv2_ms},
    }
    table = LatencyTable(rows, prov, out)
    table.save()
    return table


class CostModelMismatch(LatencyTableError, RuntimeError):
    """The stored cost model no longer reproduces the table's rows from the current code."""


def add_missing_rows(path: Path, progress: bool = True) -> tuple[LatencyTable, list[str]]:
    """Add rows to the estimated table at `path` for every block of the spaces it lacks, with its own
    stored cost model (coefficients unchanged). First re-derives the rows of every reference arch's
    blocks from the current code's graphs and requires them to equal the stored ones (to the CSV's
    6 significant digits): the same model then gives the new rows. Returns the table and the added
    keys."""
    from .deploy import deploy_form
    from .fingerprint import block_fingerprint
    from .table import read_provenance, read_rows, provenance_path
    path = Path(path)
    prov = read_provenance(provenance_path(path))
    if prov.get("source") != "estimated" or "cost_model" not in prov:
        raise ValueError(f"{path} is not an estimated Core ML table (no cost_model in its provenance)")
    rows = read_rows(path)
    cm = prov["cost_model"]
    c = np.array([cm["coefficients_ms_per_unit"][f] for f in FEATURES])
    spaces = [search_spaces.get_space(n) for n in prov["spaces"]]
    specs_by_key = {s.key: s for sp in spaces for s in sp.all_blocks()}
    ref_keys = sorted({b.key for sp in spaces for a in sp.references().values() for b in a.blocks()})
    missing = [k for k in specs_by_key if k not in rows]

    def estimate(keys):
        feats = block_features([specs_by_key[k] for k in keys], progress)
        return {k: float(np.array([feats[k][f] for f in FEATURES]) @ c) for k in keys}

    t = estimate(ref_keys)
    bad = [k for k in ref_keys if f"{t[k]:.6g}" != f"{rows[k]['median_ms']:.6g}"]  # as the CSV stores them
    if bad:
        raise CostModelMismatch(
            f"the stored cost model gives other values than {path}'s rows for {len(bad)} reference block(s) "
            f"(e.g. {bad[0]}: {t[bad[0]]} vs {rows[bad[0]]['median_ms']}); the blocks changed since the table was "
            f"built: rebuild it with `python -m hwnas.latency.coreml_cost`")
    t.update(estimate(missing))
    form = deploy_form("coreml", batch=1, precision="fp16")
    for k in missing:
        rows[k] = {"median_ms": t[k], "p10_ms": t[k], "spread": 0.0, "runs": 0,
                   "fingerprint": block_fingerprint(specs_by_key[k], form)}
    if missing:
        prov.setdefault("rows_added", []).append({
            "date": now_iso(), "n": len(missing), "kinds": sorted({specs_by_key[k].kind for k in missing}),
            "how": "python -m hwnas.latency.coreml_cost --add-missing: the table's cost model (coefficients "
                   "unchanged) applied to the new blocks' graph features, after the current code's graphs "
                   f"reproduced the stored rows of all {len(ref_keys)} reference-arch blocks"})
    prov["complete"] = {sp.name: all(s.key in rows for s in sp.all_blocks()) for sp in spaces}
    table = LatencyTable(rows, prov, path, check=False)
    table.save()
    return table, missing


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=TABLES_DIR / "coreml" / "iphone-12-estimated.csv")
    ap.add_argument("--add-missing", action="store_true",
                    help="keep the table and its cost model; add rows for the blocks it lacks")
    args = ap.parse_args(argv)
    if args.add_missing:
        t, added = add_missing_rows(args.out)
        print(f"{len(added)} rows added to {args.out}: {t.describe()}")
        return
    t = build_estimated_table(args.out)
    cm = t.provenance["cost_model"]
    print(t.describe())
    print(json.dumps({k: cm[k] for k in ("coefficients_ms_per_unit", "c0_ms", "fitted_ms", "loo_predicted_ms",
                                          "loo_mape")}, indent=2))
    print("MobileNetV2: published (unverified) 0.9 ms, cost model", t.provenance["mes_unit"]["cost_model_estimate_ms"])


if __name__ == "__main__":
    main()
