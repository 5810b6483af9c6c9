"""Accuracy predictor: a subnet's inherited top-1 estimated from its arch alone, fitted on measured
(arch, inherited top-1) pairs, so a search can score thousands of archs without a supernet or data.

    pairs = read_pairs(["experiments/results/ranking_fidelity_raw/h200-run3"], "efficientformerv2")
    pred = fit(pairs, space)                 # k-fold choice among ridge and MLP ensembles, seeded
    pred.save("efficientformerv2.json")      # plain JSON: weights, features, provenance, held-out tau
    AccuracyPredictor.load(path).evaluate(arch)   # predicted top-1 %, numpy only

The same thing from the command line (`python -m hwnas.predictor --help`):

    python -m hwnas.predictor pairs --checkpoint DIR/supernet.pt --data name=imagefolder root=/data/mine \\
        --n 300 --out pairs.jsonl            # measure random archs of a supernet (resumes a killed run)
    python -m hwnas.predictor fit --space efficientformerv2 pairs.jsonl --out my_predictor.json

A pair is only comparable with pairs measured the same way, so every line `pairs` writes records its
measurement id (`measure_settings`: the supernet's weights, the data config, `--calib-batches` and
`--batch-size`; not `--seed`, which only draws the archs and the calibration images, so processes seeded
apart measure one thing). `pairs --out` refuses a file holding pairs of another id (or of none: older
files), naming the settings that differ, and `fit` refuses pairs of one supernet measured under several
(`--measure-id` picks one; `legacy` the lines without an id, as older files and `ranking_fidelity.py` write
them). A resume first cuts off a torn last line (a write cut by power loss or a full disk) and says so.

An arch is encoded as a fixed-length vector: every searched choice of the space (`space.parameters()`,
per-stage depths, widths, expansions, r, ...) as its value scaled to [0, 1] over the choice's values,
then log params, log MACs and the number of blocks of the deployment arch. Candidates are ridge
regressions (several strengths) and ensembles of small MLPs (as OFA fits on its pairs); the one with the
best pooled out-of-fold Kendall tau is refitted on every pair. That tau and the MAE on held-out archs
are stored in the file and are what the predictor is worth: a search over it is only as good as it is.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

import search_spaces
from search_spaces import Arch

from hwnas.errors import ConfigError, HwnasError
from hwnas._files import atomic_write

FORMAT = "hwnas-accuracy-predictor/1"
#: the predictors shipped with hwnas, one per space (package data), used by `evaluator=predictor`
SHIPPED_DIR = Path(__file__).resolve().parent / "accuracy_predictors"
#: a held-out Kendall tau under this: the predictor hardly ranks archs (`AccuracyPredictor.caution`)
RANKS_TAU = 0.5


class PredictorError(ConfigError):
    """A predictor file that cannot be used here (another space, not a predictor, no pairs to fit)."""


# ---- the encoding --------------------------------------------------------------------------------
SIZE_FEATURES = 3  # the encoding ends with log params, log MACs, number of blocks


def feature_names(space: search_spaces.SearchSpace) -> list[str]:
    return list(space.parameters()) + ["log_params", "log_macs", "n_blocks"]


def encode(space: search_spaces.SearchSpace, arch: Arch) -> np.ndarray:
    """The fixed-length feature vector of `arch` (its resolution does not matter: the deployment arch
    at the space's resolution is what is encoded)."""
    params = space.parameters()
    values = space.encode(arch)
    x = []
    for name, choices in params.items():
        lo, hi = float(min(choices)), float(max(choices))
        x.append(0.0 if hi == lo else (float(values[name]) - lo) / (hi - lo))
    deploy = arch.with_resolution(space.resolution)
    x += [math.log(deploy.params(10)), math.log(deploy.macs(10)), float(len(deploy.blocks(10)))]
    return np.asarray(x, dtype=np.float64)


# ---- pairs ---------------------------------------------------------------------------------------
@dataclass
class Pairs:
    """Measured (arch, inherited top-1) pairs of one space, one supernet recipe, de-duplicated by arch."""
    space: str
    archs: list[Arch]
    top1: np.ndarray
    sources: list[str] = field(default_factory=list)  # the files read
    recipe_ids: list[str] = field(default_factory=list)
    variant: str | None = None
    data: Any = None
    consistent_only: bool = False  # every pair from a supernet of train.consistent_only (consistent archs only)
    measure_ids: list[str] = field(default_factory=list)  # [] for lines that record none (written before ids)
    measure: dict | None = None  # the settings of that id (`measure_settings`)

    def __len__(self) -> int:
        return len(self.archs)


#: the id `read_pairs` and `fit --measure-id` give lines that record no measurement id (written before ids were)
LEGACY = "legacy"
#: data keys that change how fast a pair is measured, never its value
_SPEED_ONLY_DATA = ("num_workers",)


def measure_settings(recipe_id: str, data: Any, calib_batches: int, batch_size: int) -> dict:
    """What an inherited top-1 depends on besides its arch: the supernet's weights (`recipe_id`), the data
    config with its defaults filled in (so `name=digits` and `name=digits val_fraction=0.2` are one setting)
    and the BatchNorm calibration (`calib_batches` batches of `batch_size` training images). Not the seed: it
    draws the archs and which images calibrate, a random draw of this same measurement, so the pairs of
    processes seeded apart are one measurement and fit together."""
    from dataclasses import asdict
    from hwnas.data import data_config
    d = {k: v for k, v in asdict(data_config(data)).items() if k not in _SPEED_ONLY_DATA}
    return dict(recipe_id=recipe_id, data=d, calib_batches=int(calib_batches), batch_size=int(batch_size))


def _measure_id(settings: dict) -> str:
    """12 hex digits naming `measure_settings`: pairs of one id are one measurement."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _differences(a: dict, b: dict, prefix: str = "") -> str:
    """'KEY A vs B; ...' for each setting, nested ones as data.KEY, that differs between `a` and `b`."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out.append(_differences(x, y, f"{prefix}{k}."))
        elif x != y:
            out.append(f"{prefix}{k} {json.dumps(x)} vs {json.dumps(y)}")
    return "; ".join(o for o in out if o)


def _jsonl_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            f = p / "inherited.jsonl"
            if not f.is_file():
                raise PredictorError(f"{p}: no inherited.jsonl in this folder; give the folder a "
                                     "ranking_fidelity.py gpu run wrote, or a JSON-lines file of pairs")
            out.append(f)
        elif p.is_file():
            out.append(p)
        else:
            raise PredictorError(f"{p}: no such file or folder of (arch, inherited top-1) pairs")
    return out


def longest_trainings(records: Iterable[dict], group=lambda r: r.get("recipe_id", "")) -> list[dict]:
    """Of each group of records (one supernet recipe: `group` gives its key), only those of its longest
    training (`epochs_done`). A run cut by its deadline and its full rerun share a recipe id; the cut
    run's records never count, whatever order the records were read in."""
    records = list(records)
    most: dict = {}
    for r in records:
        most[group(r)] = max(most.get(group(r), 0), r.get("epochs_done") or 0)
    return [r for r in records if (r.get("epochs_done") or 0) == most[group(r)]]


def read_pairs(paths: Iterable[str | os.PathLike], space: str, variant: str | None = None,
               recipe_id: str | None = None, kinds: Sequence[str] | None = None,
               measure_id: str | None = None) -> Pairs:
    """The pairs of `space` in JSON-lines files (or folders holding `inherited.jsonl`).

    A line is `{"space", "arch", "val_top1", ...}` as `ranking_fidelity.py gpu` and
    `python -m hwnas.predictor pairs` write them. Smoke-run lines are skipped. Of the supernet
    `variant` (None: any), the recipe with the most lines is used, never a mix (`recipe_id=` picks
    another); of a recipe trained twice, only the longest training's lines (`epochs_done`); an arch
    measured twice counts once (its last line). Pairs of one recipe measured under several settings
    (`measure_id` of the lines: other data or calibration) are refused, never mixed: `measure_id=`
    picks one (`LEGACY`: the lines that record none, as older files and `ranking_fidelity.py` write them).
    """
    files = _jsonl_files(paths)
    recs = []
    for f in files:
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise PredictorError(f"{f}: not a text file (a pairs file is JSON lines: one {{\"arch\": ..., "
                                 "\"val_top1\": ...} object per line, as `python -m hwnas.predictor pairs` "
                                 "writes); check the path") from None
        except OSError as e:
            raise PredictorError(f"{f}: cannot be read ({e.strerror or e}); check the path") from None
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError:
                if i == len(lines) - 1:
                    continue  # a torn last line (a killed writer)
                raise PredictorError(f"{f}, line {i + 1}: not JSON; a pairs file has one JSON object per line")
            if not isinstance(r, dict) or "arch" not in r or "val_top1" not in r:
                raise PredictorError(f"{f}, line {i + 1}: a pair needs 'arch' and 'val_top1' keys")
            top1 = r["val_top1"]
            if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not 0 <= top1 <= 100:
                raise PredictorError(f"{f}, line {i + 1}: val_top1={top1!r} is no top-1 % (a number in [0, 100]); "
                                     "remove that line or measure the arch again")
            if r.get("smoke") or r.get("space", r["arch"].get("space")) != space:
                continue
            if variant is not None and r.get("variant", variant) != variant:
                continue
            if kinds is not None and r.get("kind") not in kinds:
                continue
            recs.append(dict(r, _file=f))
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.get("recipe_id", "")] = counts.get(r.get("recipe_id", ""), 0) + 1
    if recipe_id is None and counts:
        recipe_id = max(counts, key=lambda k: (counts[k], k))
    recs = [r for r in recs if r.get("recipe_id", "") == recipe_id]
    groups: dict[str, list[dict]] = {}
    for r in recs:
        groups.setdefault(r.get("measure_id") or LEGACY, []).append(r)
    if measure_id is not None:
        if groups and measure_id not in groups:
            raise PredictorError(f"--measure-id {measure_id}: no pairs of supernet recipe {recipe_id!r} were measured "
                                 f"under it in {', '.join(map(str, files))}; give one of its ids: {', '.join(groups)}")
        recs = groups.get(measure_id, [])
    elif len(groups) > 1:
        raise PredictorError(_mixed_measurements(recipe_id, groups))
    recs = longest_trainings(recs)
    by_key: dict[str, dict] = {}
    for r in recs:
        arch = Arch.from_dict(r["arch"])
        by_key.pop(arch.id, None)
        by_key[arch.id] = dict(r, _arch=arch)
    if not by_key:
        found = ", ".join(f"{k or '(none)'}: {n}" for k, n in counts.items()) or "none"
        raise PredictorError(f"no (arch, inherited top-1) pairs of space {space!r} (variant {variant!r}, recipe "
                             f"{recipe_id!r}) in {', '.join(map(str, files))} (recipes found: {found}); measure "
                             "some with `python -m hwnas.predictor pairs --checkpoint ...`")
    rows = list(by_key.values())
    data = next((r.get("data") for r in rows if isinstance(r.get("data"), dict)), None)
    for f in files:  # a ranking_fidelity run names its data in run.json beside the pairs
        run = f.parent / "run.json"
        if data is None and run.is_file():
            try:
                data = json.loads(run.read_text()).get("data")
            except ValueError:
                pass
    return Pairs(space=space, archs=[r["_arch"] for r in rows], top1=np.array([float(r["val_top1"]) for r in rows]),
                 sources=[str(f) for f in files], recipe_ids=[recipe_id] if recipe_id else [], variant=variant,
                 data=data, consistent_only=all(r.get("consistent_only") is True for r in rows),
                 measure_ids=[m] if (m := rows[0].get("measure_id")) else [], measure=rows[0].get("measure"))


def _mixed_measurements(recipe_id: str, groups: dict[str, list[dict]]) -> str:
    """The line refusing pairs of one recipe measured under several settings: each id, its pairs and files,
    and how its settings differ from the largest group's."""
    ids = sorted(groups, key=lambda k: -len(groups[k]))
    ref = groups[ids[0]][0].get("measure")
    parts = []
    for k in ids:
        files = sorted({str(r["_file"]) for r in groups[k]})
        where = ", ".join(files[:2]) + (f" and {len(files) - 2} more" if len(files) > 2 else "")
        theirs = groups[k][0].get("measure")
        if k == LEGACY:
            how = ", settings not recorded"
        elif k != ids[0] and isinstance(ref, dict) and isinstance(theirs, dict):
            how = f" (against {ids[0]}: {_differences(theirs, ref)})"
        else:
            how = ""
        parts.append(f"{k}: {len(groups[k])} pairs in {where}{how}")
    return (f"the pairs of supernet recipe {recipe_id!r} were measured under {len(ids)} settings (other data or "
            f"BatchNorm calibration), which one predictor must not mix: {' | '.join(parts)}; fit the pairs of one "
            f"setting with --measure-id ID (e.g. --measure-id {ids[0]}), or give only the files of one setting")


# ---- models --------------------------------------------------------------------------------------
def _fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float, size_only: bool = False) -> dict:
    """Ridge regression on every feature, or (`size_only`) on the last SIZE_FEATURES (log params,
    log MACs, blocks): with few pairs, size alone can rank better than every choice."""
    cols = list(range(x.shape[1] - SIZE_FEATURES, x.shape[1])) if size_only else list(range(x.shape[1]))
    xs = x[:, cols]
    w = np.linalg.solve(xs.T @ xs + alpha * np.eye(len(cols)), xs.T @ y)
    return {"kind": "ridge", "alpha": alpha, "columns": cols, "coef": w.tolist()}


MLP_STEPS = 400


def _fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int, l2: float, members: int, seed: int) -> dict:
    from sklearn.neural_network import MLPRegressor
    nets = []
    for m in range(members):
        # full-batch Adam for a fixed number of steps: cheap (pairs are hundreds) and deterministic
        net = MLPRegressor(hidden_layer_sizes=(hidden, hidden), activation="relu", solver="adam", alpha=l2,
                           batch_size=len(x), learning_rate_init=0.01, max_iter=MLP_STEPS, tol=0.0,
                           n_iter_no_change=MLP_STEPS + 1, shuffle=False, random_state=seed + m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reaching the step count is the plan, not a convergence failure
            net.fit(x, y)
        nets.append({"weights": [w.tolist() for w in net.coefs_], "biases": [b.tolist() for b in net.intercepts_]})
    return {"kind": "mlp", "hidden": hidden, "l2": l2, "members": nets}


def _predict_model(model: dict, x: np.ndarray) -> np.ndarray:
    if model["kind"] == "ridge":
        return x[:, model["columns"]] @ np.asarray(model["coef"])
    outs = []
    for net in model["members"]:
        h = x
        ws, bs = net["weights"], net["biases"]
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = h @ np.asarray(w) + np.asarray(b)
            if i < len(ws) - 1:
                h = np.maximum(h, 0.0)
        outs.append(h.reshape(-1))
    return np.mean(outs, axis=0)


#: the candidates the k-fold choice compares: (name, fit(x, y, seed) -> model)
CANDIDATES = [
    *[(f"ridge(alpha={a:g})", (lambda a: lambda x, y, s: _fit_ridge(x, y, a))(a)) for a in (0.1, 1.0, 10.0, 100.0, 1000.0)],
    *[(f"ridge on size only (alpha={a:g})", (lambda a: lambda x, y, s: _fit_ridge(x, y, a, True))(a)) for a in (0.1, 10.0)],
    *[(f"mlp(2x{h}, l2={l2:g}, 5 members)", (lambda h, l2: lambda x, y, s: _fit_mlp(x, y, h, l2, 5, s))(h, l2))
      for h, l2 in ((32, 1.0), (64, 10.0))],
]


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return mean, std


def _fit_scaled(fit_fn, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    xm, xs = _standardize(x)
    ym, ys = float(y.mean()), float(y.std()) or 1.0
    model = fit_fn((x - xm) / xs, (y - ym) / ys, seed)
    return dict(model, x_mean=xm.tolist(), x_std=xs.tolist(), y_mean=ym, y_std=ys)


def _predict_scaled(model: dict, x: np.ndarray) -> np.ndarray:
    z = (x - np.asarray(model["x_mean"])) / np.asarray(model["x_std"])
    return _predict_model(model, z) * model["y_std"] + model["y_mean"]


def _rank_stats(pred: np.ndarray, y: np.ndarray) -> dict:
    from scipy import stats
    if np.ptp(pred) == 0 or np.ptp(y) == 0:
        return dict(kendall_tau=None, spearman_rho=None, mae=float(np.mean(np.abs(pred - y))))
    return dict(kendall_tau=float(stats.kendalltau(pred, y)[0]), spearman_rho=float(stats.spearmanr(pred, y)[0]),
                mae=float(np.mean(np.abs(pred - y))))


def kfold_scores(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> dict[str, dict]:
    """Each candidate's out-of-fold predictions of every pair (archs split into `folds` seeded folds),
    scored by Kendall tau, Spearman rho and MAE against the measured values."""
    n = len(y)
    order = np.random.default_rng(seed).permutation(n)
    fold_of = np.empty(n, dtype=int)
    fold_of[order] = np.arange(n) % folds
    out = {}
    for name, fit_fn in CANDIDATES:
        pred = np.full(n, np.nan)  # every pair is some fold's test pair (fit checks folds >= 2)
        for k in range(folds):
            test = fold_of == k
            model = _fit_scaled(fit_fn, x[~test], y[~test], seed)
            pred[test] = _predict_scaled(model, x[test])
        out[name] = _rank_stats(pred, y)
    # what size alone gets: the ranking of log MACs (no fit)
    out["log MACs alone (no fit)"] = _rank_stats(x[:, -SIZE_FEATURES + 1], y) | {"mae": None}
    return out


# ---- the predictor -------------------------------------------------------------------------------
class _NonFinite(Exception):
    pass


def _refuse_constant(name: str):
    """JSON's non-standard NaN / Infinity / -Infinity, which Python's json reads as floats."""
    raise _NonFinite(name)


class AccuracyPredictor:
    """`evaluate(arch)` -> predicted inherited top-1 % (numpy only; no torch, supernet or data)."""

    def __init__(self, doc: dict, path: str | None = None):
        self.doc = doc
        self.path = path
        self.space_name = doc["space"]
        self.space = search_spaces.get_space(self.space_name)
        if doc.get("features") != feature_names(self.space):
            raise PredictorError(f"{path or 'predictor'}: fitted on another encoding of space {self.space_name!r} "
                                 "(its choices changed since); refit it with `python -m hwnas.predictor fit`")
        self.model = doc["model"]
        self.calls = 0

    @property
    def provenance(self) -> dict:
        return self.doc.get("provenance", {})

    @property
    def digest(self) -> str:
        """16 hex digits naming what the predictor computes (its model, encoding and space)."""
        body = json.dumps({k: self.doc[k] for k in ("format", "space", "features", "model")}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    @property
    def source(self) -> dict[str, str]:
        """Where its numbers come from, read from the file's provenance: the data and resolution the
        supernet was scored on, the supernet recipe (and variant), the pairs and the held-out Kendall
        tau. A field the file does not hold is 'unknown' (never guessed)."""
        p = self.provenance
        d = p.get("data") if isinstance(p.get("data"), dict) else {}
        tau = self.heldout_tau
        recipes = p.get("recipe_ids") if isinstance(p.get("recipe_ids"), list) else []
        recipe = ", ".join(str(r) for r in recipes) or "unknown"
        if p.get("variant"):
            recipe += f" ({p['variant']})"
        return {"data": str(d.get("name") or "unknown"),
                "resolution": f"{d['image_size']} px" if d.get("image_size") else "unknown resolution",
                "recipe": recipe, "pairs": str(p.get("n_pairs", "unknown")),
                "heldout_tau": f"{tau:.2f}" if tau is not None else "unknown"}

    @property
    def consistent_only(self) -> bool:
        """Fitted on pairs of a supernet trained on the space's consistent archs only (train.consistent_only):
        it knows nothing of the others, so a search on it covers those only."""
        return self.provenance.get("consistent_only") is True

    @property
    def heldout_tau(self) -> float | None:
        """The held-out Kendall tau the file records (`provenance.heldout.kendall_tau`); None where it
        records none, or no finite number."""
        heldout = self.provenance.get("heldout")
        tau = heldout.get("kendall_tau") if isinstance(heldout, dict) else None
        return float(tau) if isinstance(tau, (int, float)) and math.isfinite(tau) else None

    @property
    def shipped_file(self) -> bool:
        return self.path is not None and Path(self.path).resolve().parent == SHIPPED_DIR.resolve()

    @property
    def label(self) -> str:
        """One line: what the accuracy is and where it comes from (console summary, report.md, plots)."""
        s = self.source
        return (f"predicted inherited top-1 % on {s['data']} at {s['resolution']} val "
                f"({'shipped ' if self.shipped_file else ''}accuracy predictor of supernet recipe {s['recipe']}, "
                f"{s['pairs']} pairs, held-out Kendall tau {s['heldout_tau']})")

    @property
    def caution(self) -> str | None:
        """One line where this predictor's own held-out Kendall tau says it hardly ranks archs (below
        `RANKS_TAU`, or not recorded), so that a search on it says its accuracy objective is near noise;
        None where it ranks."""
        tau = self.heldout_tau
        if tau is not None and tau >= RANKS_TAU:
            return None
        measured = (f"its held-out Kendall tau is {tau:.2f} (< {RANKS_TAU})" if tau is not None
                    else "its held-out Kendall tau was never measured")
        return (f"the accuracy predictor {self.path or ''} hardly ranks {self.space_name} archs: {measured}, so the "
                "search's accuracy objective is close to noise (its accuracy column hardly tells archs apart); score "
                "with a supernet trained on your data (evaluator=supernet checkpoint=...) or refit the predictor on its "
                "pairs (docs/accuracy.md)")

    def check_space(self, space_name: str) -> None:
        if space_name != self.space_name:
            raise PredictorError(
                f"the accuracy predictor {self.path or ''} was fitted on space {self.space_name!r}, not "
                f"{space_name!r}: search space={self.space_name}, or give evaluator.path= a predictor of "
                f"{space_name} (fit one with `python -m hwnas.predictor fit --space {space_name} PAIRS --out FILE`)")

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        for a in archs:
            self.check_space(a.space)
        x = np.stack([encode(self.space, a) for a in archs])
        return _predict_scaled(self.model, x)

    def evaluate(self, arch: Arch) -> float:
        self.calls += 1
        return float(self.predict([arch])[0])

    __call__ = evaluate

    # ---- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write(path, json.dumps(self.doc, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AccuracyPredictor":
        p = Path(path).expanduser()
        if not p.is_file():
            raise PredictorError(f"evaluator.path={path}: no such predictor file; fit one with `python -m "
                                 "hwnas.predictor fit --space SPACE PAIRS --out FILE`, or leave evaluator.path "
                                 "null for the shipped one")
        try:
            doc = json.loads(p.read_text(), parse_constant=_refuse_constant)
        except _NonFinite as e:
            raise PredictorError(f"{p}: holds {e} where a number belongs (a fit on broken pairs?); refit it with "
                                 "`python -m hwnas.predictor fit`") from None
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise PredictorError(f"{p}: not an accuracy predictor (a JSON file of format {FORMAT!r}, as "
                                 "`python -m hwnas.predictor fit` writes)")
        if doc.get("space") not in search_spaces.list_spaces():
            raise PredictorError(f"{p}: fitted on space {doc.get('space')!r}, which is not registered here "
                                 f"(spaces: {search_spaces.list_spaces()})")
        try:  # a model whose parts are missing, of another kind or of the wrong shapes: one line, not a traceback
            pred = cls(doc, str(p))
            space = pred.space
            if (doc["model"] or {}).get("kind") not in ("ridge", "mlp"):
                raise ValueError(f"model kind {(doc['model'] or {}).get('kind')!r}")
            value = float(_predict_scaled(pred.model, encode(space, space.min_arch())[None])[0])
        except PredictorError:
            raise  # already says what is wrong (another encoding of the space)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise PredictorError(f"{p}: its model is not one `python -m hwnas.predictor fit` writes "
                                 f"({type(e).__name__}: {e}); refit it") from None
        if not math.isfinite(value):
            raise PredictorError(f"{p}: predicts {value} for the space's smallest arch; refit it")
        return pred

    @classmethod
    def shipped(cls, space_name: str) -> "AccuracyPredictor":
        path = SHIPPED_DIR / f"{space_name}.json"
        if not path.is_file():
            have = sorted(p.stem for p in SHIPPED_DIR.glob("*.json"))
            raise PredictorError(f"no accuracy predictor ships for space {space_name!r} (shipped: {have}); fit one "
                                 f"with `python -m hwnas.predictor fit --space {space_name} PAIRS --out FILE` and "
                                 "give it as evaluator.path=FILE")
        return cls.load(path)


def _best(scores: dict) -> str:
    """The candidate with the highest out-of-fold tau (ties: the earlier, simpler one)."""
    names = [c for c, _ in CANDIDATES if scores[c]["kendall_tau"] is not None]
    return max(names, key=lambda c: (scores[c]["kendall_tau"], -names.index(c)))


def fit(pairs: Pairs, folds: int = 5, seed: int = 0, command: str | None = None) -> AccuracyPredictor:
    """Choose the candidate with the best pooled out-of-fold Kendall tau, refit it on every pair."""
    space = search_spaces.get_space(pairs.space)
    n = len(pairs)
    if folds < 2:  # 0 or 1 folds hold no pair out: a "held-out" tau would be of nothing
        raise PredictorError(f"--folds {folds}: at least 2 (each pair is predicted by a model fitted without "
                             "its fold; 5 is the default)")
    if n < 2 * folds:
        raise PredictorError(f"{n} pairs of space {pairs.space!r}: too few for {folds}-fold selection (at least "
                             f"{2 * folds}); measure more archs with `python -m hwnas.predictor pairs`")
    x = np.stack([encode(space, a) for a in pairs.archs])
    y = np.asarray(pairs.top1, dtype=np.float64)
    if np.ptp(y) == 0:
        raise PredictorError(f"the {n} pairs of space {pairs.space!r} all have the same accuracy "
                             f"({y[0]:.2f} %): nothing to rank; measure archs of a trained supernet")
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):  # tiny matrices: threads only contend (and one thread gives the same sums every run)
        scores = kfold_scores(x, y, folds, seed)
        model = _fit_scaled(dict(CANDIDATES)[_best(scores)], x, y, seed)
    best = _best(scores)
    doc = dict(format=FORMAT, space=pairs.space, features=feature_names(space), model=model, provenance=dict(
        sources=pairs.sources, recipe_ids=pairs.recipe_ids, variant=pairs.variant, data=pairs.data, n_pairs=n,
        consistent_only=pairs.consistent_only, measure_ids=pairs.measure_ids, measure=pairs.measure,
        target="inherited val top-1 % (supernet weights, BatchNorm recalibrated)",
        top1_range=[float(y.min()), float(y.max())], top1_mean=float(y.mean()), top1_std=float(y.std()),
        chosen=best, folds=folds, seed=seed, heldout=scores[best], candidates=scores,
        heldout_note=f"pooled out-of-fold predictions of {folds} folds; the best of {len(CANDIDATES)} candidates "
                     "by this same number, so slightly optimistic",
        command=command))
    return AccuracyPredictor(doc)


# ---- measuring pairs on a supernet ---------------------------------------------------------------
def _resume(out: Path, settings: dict, mid: str, log) -> set[str]:
    """The archs `out` already holds, once sure that appending to it keeps it one measurement: a line of
    other `settings` (not of id `mid`, or of none recorded) is refused, naming what differs. A torn last
    line (a write cut by power loss or a full disk) is cut off first, atomically, or the next line would
    be glued onto it."""
    if not out.is_file():
        return set()
    raw = out.read_bytes()
    whole = raw[:raw.rfind(b"\n") + 1]
    try:
        text = whole.decode("utf-8")
    except UnicodeDecodeError:
        raise PredictorError(f"--out {out}: not a text file; --out names a JSON-lines file of pairs (appended to): "
                             "give another path") from None
    done = set()
    for i, line in enumerate(text.splitlines()):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if not isinstance(r, dict) or "arch" not in r:
            continue
        if r.get("measure_id") != mid:
            theirs = r.get("measure")
            what = (f"under other settings (the file's vs this run's: {_differences(theirs, settings)})"
                    if isinstance(theirs, dict) else "by an earlier hwnas, which recorded no measurement id")
            raise PredictorError(f"--out {out}, line {i + 1}: a pair measured {what}; pairs appended to it would be "
                                 "fitted as one measurement: give another --out file, or rerun with the file's "
                                 "settings")
        done.add(Arch.from_dict(r["arch"]).id)
    if len(whole) < len(raw):
        atomic_write(out, whole)
        log(f"{out}: removed a torn last line ({len(raw) - len(whole)} bytes) left by a cut write; its arch is "
            "measured again")
    return done


def measure_pairs(checkpoint: str | os.PathLike, data: dict, out: str | os.PathLike, n: int, seed: int = 0,
                  device: str = "auto", calib_batches: int = 4, batch_size: int = 256,
                  log=print) -> Path:
    """Append (arch, inherited val top-1) lines of `n` seeded random archs of a supernet to `out`;
    archs already in `out` are skipped, so a killed run resumes. Every line carries the id of its
    measurement (`measure_settings`); a file of another is refused, never appended to."""
    from hwnas.checkpoint import weights_digest
    from hwnas.evaluate import SubnetEvaluator
    ev = SubnetEvaluator.from_checkpoint(checkpoint, data, calib_batches=calib_batches, batch_size=batch_size,
                                         seed=seed, device=device)
    space = ev.net.space
    rid = weights_digest(ev.net.state_dict())
    settings = measure_settings(rid, data, calib_batches, batch_size)
    mid = _measure_id(settings)
    out = Path(out)
    done = _resume(out, settings, mid, log)
    # the archs the supernet was trained on: under train.consistent_only only the consistent ones (the
    # others' inherited accuracy measures a structure the supernet never trained)
    consistent = ev.consistent_only
    if consistent:
        rng = random.Random(seed)
        archs = [space.max_arch(), space.min_consistent_arch()] + [space.sample_consistent(rng) for _ in range(n)]
    else:
        archs = [space.max_arch(), space.min_arch()] + space.sample_many(n, seed=seed)
    archs = list({a.id: a for a in archs}.values())[:n]
    out.parent.mkdir(parents=True, exist_ok=True)
    import time
    with open(out, "a") as f:
        for i, arch in enumerate(archs):
            if arch.id in done:
                continue
            t = time.time()
            top1 = ev.evaluate(arch)
            f.write(json.dumps(dict(space=space.name, arch=arch.to_dict(), key=arch.id, kind="random",
                                    val_top1=top1, variant="checkpoint", recipe_id=rid, data=data,
                                    consistent_only=consistent, calib_batches=calib_batches, batch_size=batch_size,
                                    seed=seed, measure_id=mid, measure=settings,
                                    seconds=round(time.time() - t, 3)),
                               sort_keys=True) + "\n")
            f.flush()
            log(f"[{i + 1}/{len(archs)}] {arch.id} top-1 {top1:.2f} % ({time.time() - t:.1f} s)")
    return out


# ---- command line --------------------------------------------------------------------------------
def _data_arg(items: Sequence[str] | None) -> dict:
    d: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--data {item}: give KEY=VALUE pairs (e.g. name=imagefolder root=/data/mine)")
        try:
            d[key] = json.loads(value)
        except ValueError:
            d[key] = value
    from hwnas.data import data_config
    data_config(d)  # a wrong key or value fails here, by name
    return d


def summary(pred: AccuracyPredictor) -> str:
    p = pred.provenance
    h = p["heldout"]
    lines = [f"accuracy predictor for {pred.space_name}: {p['chosen']}, {p['n_pairs']} pairs "
             f"(top-1 {p['top1_range'][0]:.2f}-{p['top1_range'][1]:.2f} %, std {p['top1_std']:.2f})",
             f"held-out ({p['folds']}-fold): Kendall tau {h['kendall_tau']:.3f}, Spearman rho "
             f"{h['spearman_rho']:.3f}, MAE {h['mae']:.3f} points"]
    for name, s in p["candidates"].items():
        tau = "n/a" if s["kendall_tau"] is None else f"{s['kendall_tau']:.3f}"
        mae = "" if s.get("mae") is None else f", MAE {s['mae']:.3f}"
        lines.append(f"  {name}: tau {tau}{mae}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hwnas.predictor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit a predictor on pairs files (or ranking_fidelity.py gpu output folders)")
    f.add_argument("pairs", nargs="+", help="JSON-lines files of pairs, or folders holding inherited.jsonl")
    f.add_argument("--space", required=True, choices=search_spaces.list_spaces())
    f.add_argument("--out", required=True, help="the predictor file (JSON)")
    f.add_argument("--variant", default="any", help="only the pairs of this supernet variant of ranking_fidelity "
                   "runs, e.g. lowlr (pairs of `hwnas.predictor pairs` are 'checkpoint'); any: every variant (the "
                   "recipe with the most pairs is used either way)")
    f.add_argument("--recipe-id", default=None, help="default: the recipe with the most pairs")
    f.add_argument("--measure-id", default=None, help="only the pairs measured under this setting (the lines' "
                   f"measure_id; {LEGACY}: lines that record none); default: the recipe's pairs, refused if "
                   "measured under several settings")
    f.add_argument("--folds", type=int, default=5)
    f.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("pairs", help="measure (arch, inherited val top-1) of random archs of a supernet")
    m.add_argument("--checkpoint", required=True, help="supernet checkpoint (python -m hwnas.train)")
    m.add_argument("--data", nargs="*", metavar="KEY=VALUE", help="the data the supernet was trained on "
                   "(the keys of that dataset's hwnas.data schema), e.g. name=imagefolder root=/data/mine image_size=64")
    m.add_argument("--n", type=int, default=300, help="archs (the max and min arch, then seeded random ones)")
    m.add_argument("--out", required=True, help="JSON-lines file; appended to, archs already there skipped; a "
                   "file of pairs measured under other settings (supernet, --data, --calib-batches, --batch-size) "
                   "is refused")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--device", default="auto")
    m.add_argument("--calib-batches", type=int, default=4)
    m.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "fit":
            pairs = read_pairs(args.pairs, args.space, None if args.variant == "any" else args.variant,
                               args.recipe_id, measure_id=args.measure_id)
            pred = fit(pairs, folds=args.folds, seed=args.seed,
                       command="python -m hwnas.predictor " + " ".join(sys.argv[1:] if argv is None else argv))
            pred.save(args.out)
            print(summary(pred))
            print(f"written {args.out}")
        else:
            from hwnas.errors import check_min
            for flag, value, low in (("--n", args.n, 1), ("--batch-size", args.batch_size, 1),
                                     ("--calib-batches", args.calib_batches, 0)):
                check_min("", flag, value, low, error=PredictorError)  # before the checkpoint loads
            measure_pairs(args.checkpoint, _data_arg(args.data), args.out, args.n, seed=args.seed,
                          device=args.device, calib_batches=args.calib_batches, batch_size=args.batch_size)
            print(f"written {args.out}")
    except HwnasError as e:
        from hwnas.cli import USER_ERROR_EXIT, report_user_error
        report_user_error("predictor", e)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        from hwnas.cli import INTERRUPT_EXIT
        kept = (f"nothing was written ({args.out} is written whole at the end); rerun the same command"
                if args.cmd == "fit" else
                f"every pair measured so far is in {args.out}; rerun the same command to measure the rest")
        print(f"hwnas.predictor: interrupted (Ctrl-C); {kept}", file=sys.stderr)
        return INTERRUPT_EXIT
    return 0


__all__ = ["AccuracyPredictor", "Pairs", "PredictorError", "encode", "feature_names", "fit", "kfold_scores",
           "longest_trainings", "LEGACY", "measure_pairs", "measure_settings", "read_pairs", "SHIPPED_DIR"]

if __name__ == "__main__":
    sys.exit(main())
