"""`python -m hwnas.search +target=T`: compose the pieces, run the strategy, write the outputs.

The Hydra entry point is `hwnas/search/__main__.py`; `run(cfg, run_dir)` is the whole app as a
function of its config, so tests and experiments call it directly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import search_spaces

from hwnas.config import compose, get_space_from_cfg
from hwnas.errors import HwnasError
from hwnas.mes import MES

from . import study as study_mod
from .objectives import LatencyTarget, ProxyEvaluator, Scorer, expand_objectives
from .report import ReportContext, TargetReport, records_from_trials, summary_text, write_outputs
from .strategies import Budget, SearchRun, directions, get_strategy


class SearchError(HwnasError):
    """A bad setting or a missing input, with the fix in the message."""


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """The app's config for these command-line overrides, outside a Hydra run (tests, experiments)."""
    from .config import register
    register()
    return compose("search", overrides)


def list_targets() -> list[str]:
    from hwnas.latency.target import list_targets as registered
    return registered()


def _cfg_dict(node: Any) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_cores(cores: int, load: float | None = None) -> int:
    """Cores other jobs keep busy: the 1-minute load average beyond this process, rounded down, at
    most all cores but one (`load`: the load average; None: the machine's)."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):
            return 0
    return max(0, min(cores - 1, int(load - 1.0)))


def thread_policy(threads: int | None, busy: int = 0, note: str | None = None):
    """Set torch's CPU threads for the trials: `threads`, or the cores shared among this study's
    live workers on this machine, less the `busy` cores other jobs use (returned as the
    `on_local_workers` callback of `run_trials`).

    PyTorch's CPU thread pool spins while it waits: two processes that each use every core stall
    each other at every parallel region. `experiments/search_workers_threads.py` (2-core VM): two
    workers of the main search on all cores each took 96-157 s, sharing them 17-18 s, one alone 19 s;
    a cached search on a VM where another job ran took 2-8 min on all cores and 47 s on one (issue 24).
    """
    import torch
    if threads is not None:
        if threads < 1:
            raise SearchError(f"threads={threads}: give a positive number of CPU threads, or null to share "
                              "this machine's cores among the study's workers")
        torch.set_num_threads(threads)
        return None
    cores = max(1, usable_cores() - busy)
    said = []

    def share(n_workers: int) -> None:
        if note and not said:  # at the first trial: the note goes with the work it concerns
            print(note, file=sys.stderr, flush=True)
            said.append(True)
        want = max(1, cores // max(1, n_workers))
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
    return share


def default_busy_cores(threads: int | None) -> tuple[int, str | None]:
    """With threads=null: the cores other jobs keep busy, and the line that says so (printed at the
    first trial, by `thread_policy`), or (0, None)."""
    if threads is not None:
        return 0, None
    cores = usable_cores()
    busy = busy_cores(cores)
    if not busy:
        return 0, None
    return busy, (f"threads: other jobs keep {busy} of this machine's {cores} cores busy (load average "
                  f"{os.getloadavg()[0]:.1f}): torch uses at most {cores - busy} thread(s) so as not to "
                  "oversubscribe; threads=N sets it")


# ---- targets -----------------------------------------------------------------------------------------
def target_config(name: str, settings: Any = None) -> DictConfig:
    """The target's defaults (`hwnas/conf/target/<name>.yaml`, or a registered target's schema) checked
    against its schema, with `settings` (a mapping of its keys) on top: one target of a search over several."""
    from omegaconf.errors import OmegaConfBaseException

    from hwnas.latency.config import schema_of, target_keys, target_settings
    if name not in list_targets():
        raise SearchError(f"targets: unknown target {name!r} (targets: {', '.join(list_targets())})")
    try:
        node = OmegaConf.merge(OmegaConf.structured(schema_of(name)), target_settings(name), _cfg_dict(settings))
    except OmegaConfBaseException as e:
        raise SearchError(f"target_settings.{name}: {e.msg if hasattr(e, 'msg') else e} (the keys of target "
                          f"{name}: {', '.join(target_keys(name))})") from None
    if node.name != name:
        raise SearchError(f"target_settings.{name}.name: a target's name cannot be changed")
    from hwnas.cli import check_config
    from hwnas.errors import ConfigError
    try:
        check_config(node)  # the schema's ranges, as +target= gets them at start-up
    except ConfigError as e:
        msg = str(e)
        raise SearchError(f"target_settings.{name}." + msg.removeprefix("target.") if msg.startswith("target.")
                          else f"target_settings.{name}: {msg}") from None
    return node


def check_plus_target_list(overrides) -> None:
    """`+target=[a,b]` on the command line: Hydra would merge the list into ONE target (or fail to
    merge two targets' schemas); several targets are named with `targets=[a,b]`."""
    given = next((o for o in overrides if o.lstrip("+~").startswith("target=[")), None)
    if given is not None:
        names = given.split("=", 1)[1]
        raise SearchError(f"{given}: +target= takes one target; name several targets with "
                          f"targets={names} (without +)")


def resolve_targets(cfg: DictConfig) -> list[DictConfig]:
    """The targets of the search: `+target=T` (one) or `targets=[T1,T2,...]` (several)."""
    if cfg.get("targets"):
        if cfg.get("target") is not None:
            raise SearchError("give either +target=T (one target) or targets=[T1,T2,...] (several), not both")
        names = [str(n) for n in cfg.targets]
        if len(set(names)) != len(names):
            raise SearchError(f"targets={names}: each target once")
        settings = _cfg_dict(cfg.get("target_settings"))
        extra = sorted(set(settings) - set(names))
        if extra:
            raise SearchError(f"target_settings.{extra[0]}: {extra[0]!r} is not one of targets={names}")
        return [target_config(n, settings.get(n)) for n in names]
    if cfg.get("target") is None:
        raise SearchError("no target given: choose one with +target=NAME, or several with "
                          f"targets=[NAME,NAME,...] (targets: {', '.join(list_targets())})")
    if cfg.get("target_settings"):
        raise SearchError("target_settings is for a search over several targets (targets=[...]); "
                          "with +target=T set target.KEY=VALUE")
    return [cfg.target]


def resolve_budget(cfg: DictConfig, names: list[str]) -> Budget:
    """budget.latency_ms: a number (one target) or {target: ms} (any subset of the targets)."""
    lat = cfg.budget.latency_ms
    if lat is None:
        lat_ms = {}
    elif isinstance(lat, (int, float)) and not isinstance(lat, bool):
        if len(names) > 1:
            raise SearchError(f"budget.latency_ms={lat}: with several targets give one budget per target, "
                              f"e.g. budget.latency_ms={{{names[0]}:{lat}}} (any subset of {names})")
        lat_ms = {names[0]: float(lat)}
    else:
        try:
            lat_ms = {str(k): float(v) for k, v in _cfg_dict(lat).items()}
        except (TypeError, ValueError, AttributeError):
            raise SearchError(f"budget.latency_ms={lat}: give milliseconds, or {{target: ms}}") from None
        bad = sorted(set(lat_ms) - set(names))
        if bad:
            raise SearchError(f"budget.latency_ms: {bad[0]!r} is not a target of this search ({names})")
    for t, v in lat_ms.items():
        if not v > 0:
            raise SearchError(f"budget.latency_ms: {v} ms for {t}; give a positive number")
    return Budget(lat_ms, None if cfg.budget.params_m is None else cfg.budget.params_m * 1e6)


# ---- inputs ----------------------------------------------------------------------------------------
def load_table(target: DictConfig, space: search_spaces.SearchSpace, several: bool = False):
    """The table of the target for the space's archs: their space, task and input size (`scope`)."""
    from hwnas.latency import LatencyTable, default_table_path
    from hwnas.latency.backends import this_device
    path = target.get("table") or default_table_path(target.name, space.scope, target.get("tables_dir"),
                                                      this_device=this_device(target.name))
    table = LatencyTable.load(path, target=target.name, space=space.scope,
                              allow_stale=bool(target.get("allow_stale", False)))
    check_table_form(target, table, str(path), space.name, several)
    return table, str(path)


def check_table_form(target: DictConfig, table, path: str, space: str, several: bool = False) -> None:
    """A form setting asked for (batch, precision, or the target's own: channels_last, attention, depthwise, ...,
    set to other than the target's default) must be what the table timed: a latency of another form is another
    network's. Settings left at their defaults follow the table (a table given by target.table= may have timed,
    say, torch_inductor without autotuning; `hwnas.extract run=` then compiles as it timed)."""
    from hwnas.latency import deploy_form, get_target
    spec = get_target(target.name)
    defaults = spec.schema() if spec.schema else None
    asked = {k: target.get(k) for k in spec.form_keys
             if target.get(k) is not None and (defaults is None or target.get(k) != getattr(defaults, k, None))}
    if not asked:
        return
    timed = table.deploy_form()
    wanted = deploy_form(target.name, **{**timed.settings(), **asked})
    w, t = wanted.settings(), timed.settings()
    differ = sorted(k for k in {*w, *t} if w.get(k) != t.get(k))
    if not differ:
        return

    def said(form, settings, k):  # a setting at its default is not named in settings(); the form holds it
        return _yaml_value(settings.get(k, getattr(form, k, "?")))
    raise SearchError(
        f"{path} timed the {target.name} form with {', '.join(f'{k}={said(timed, t, k)}' for k in differ)}; this "
        f"search deploys {', '.join(f'{k}={said(wanted, w, k)}' for k in differ)}. Profile a table of that form "
        f"(`python -m hwnas.profile +target={target.name} {' '.join(f'target.{k}={said(wanted, w, k)}' for k in differ)} "
        f"space={space} tables_dir=DIR`) and search with "
        f"{f'target_settings.{target.name}.tables_dir=DIR' if several else 'target.tables_dir=DIR'}, "
        f"or with the table's settings")


def _yaml_value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def table_reason(target: DictConfig, space: search_spaces.SearchSpace) -> str:
    """Why the search uses the table it uses (`hwnas.latency.choose_table`; `target.table=` overrides)."""
    from hwnas.latency.backends import this_device
    from hwnas.latency.table import choose_table
    if target.get("table"):
        return "given as target.table="
    return choose_table(target.name, space.scope, target.get("tables_dir"), this_device=this_device(target.name))["reason"]


def table_warnings(table, space: search_spaces.SearchSpace, path: str) -> list[str]:
    """What the report and the console must say about the table before anything else: another
    device than this machine's for the target (its CPU or GPU), an adapted table, rows used although
    stale (allow_stale)."""
    from hwnas.latency.backends import device_note
    out = []
    note = device_note(table, space.scope, path)
    if note:
        out.append("DEVICE MISMATCH: " + note)
    adapted = (table.provenance.get("adapted") or {})
    if adapted:
        frm = adapted.get("from") or {}
        rec = (adapted.get("scopes") or {}).get(space.scope) or {}
        fid = (table.provenance.get("fidelity") or {}).get(space.scope)
        rows = adapted.get("rows")
        out.append(f"ADAPTED TABLE: {path} was adapted to {table.device} from {frm.get('table')} (measured on "
                   f"{frm.get('device')}): its block rows are that table's"
                   + (f" (target {rows['target']}: {rows.get('deploy_form')})" if rows else "")
                   + f", its correction was fitted on {rec.get('networks', '?')} whole networks measured on "
                   f"{table.device}" + (f" as {table.target} ships them" if rows else "")
                   + f" in {rec.get('seconds', 0):.0f} s; "
                   + (f"{100 * fid['within_10pct']:.0f}% of {fid['n']} fresh held-out subnets within ±10% "
                      f"({100 * fid['within_5pct']:.0f}% within ±5%), Kendall tau {fid['kendall_tau']:.2f}. "
                      if fid else "its held-out fidelity was not measured. ")
                   + f"For a device you deploy to for months, profile it fully: "
                     f"`python -m hwnas.profile +target={table.target} space={space.name}`.")
    lacking = [s.key for s in space.all_blocks() if s.key not in table.rows]
    if lacking:
        out.append(f"INCOMPLETE TABLE: {path} has no row for {len(lacking)} of the {space.name} space's blocks "
                   f"(e.g. {lacking[0]}); the search skips every arch that needs one (counted as invalid). "
                   f"Fill them with `python -m hwnas.profile +target={table.target} space={space.name}` on that "
                   f"device{_fill_hint(table, space.name)}.")
    if not (table.provenance.get("correction") or {}).get(space.scope):
        out.append(f"NO CORRECTION: {path} has no whole-network correction for {space.scope} (a profile with "
                   f"n_fit=0, or one stopped before its fit networks): its latencies are raw sums of block rows, "
                   f"which miss what a whole network adds between blocks. Finish it with "
                   f"`python -m hwnas.profile +target={table.target} space={space.name}` on that device.")
    if table.allow_stale:
        table.predict(space.min_arch())  # checks the correction's fit networks: said below if stale
    for sp, keys in table.stale_used.items():
        out.append(f"STALE TABLE USED (target.allow_stale=true): {len(keys)} row(s)/network group(s) of {sp} in "
                   f"{path} no longer describe what the code deploys, e.g. {', '.join(keys[:3])}; their latencies "
                   f"may be wrong. Refresh them with `python -m hwnas.profile +target={table.target} space={sp}`.")
    return out


def _fill_hint(table, space: str) -> str:
    """What the table's provenance says about its missing rows (why, and the command that fills them)."""
    note = (table.provenance.get("missing_rows") or {}).get(space) or {}
    parts = [note[k] for k in ("why", "fill") if note.get(k)]
    return f" ({'; '.join(parts)})" if parts else ""


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class AccuracySource:
    """Where a search's accuracies come from, and what the report says about them."""
    evaluator: Any  # .evaluate(arch) -> float
    label: str  # e.g. "top-1 % on digits val"
    resolution: int | None  # the evaluator's input size (None: the arch's own)
    fingerprint: str  # what determines the accuracies (weights, space, evaluator, data): a study keeps one
    legacy_fingerprint: Any = None  # () -> the fingerprint hwnas < 0.2 stored (checkpoint file bytes)
    record: dict | None = None  # what the run folder records (accuracy_source.json): evaluator, weights


#: data keys that do not change an evaluation's result
_NOT_RESULTS = ("num_workers",)


#: the data group's default (hwnas/conf/search.yaml): what the built-in smoke-test supernet trains on
DEFAULT_DATA = "digits"
#: what the accuracy of a search scored with the built-in short supernet is: a smoke test
SMOKE_TEST = "SMOKE TEST (built-in short supernet, not an accuracy)"


def searched_space(space, acc):
    """The archs a search with accuracy `acc` (an `Accuracy` of `build_evaluator`) covers: the space's
    consistent view when the accuracy comes from a supernet trained on those archs only
    (train.consistent_only: it knows nothing of the others), else the space itself."""
    if (acc.record or {}).get("consistent_only") and not space.consistent:
        return space.consistent_view()
    return space


#: the console's and report.md's line when the search covers a space's consistent archs only
CONSISTENT_NOTE = ("the accuracy comes from a supernet trained on {space}'s structurally consistent archs only "
                   "(train.consistent_only), so the search covers those archs only (the references among them)")


def build_evaluator(cfg: DictConfig, space: search_spaces.SearchSpace) -> AccuracySource:
    """The search's accuracy: the shipped accuracy predictor (the default), a supernet (`checkpoint=`,
    or the built-in short one, a smoke test), or the proxy score (not accuracy). Its `record` says
    which, for the run folder (`accuracy_source.json`, what `hwnas.extract run=` reads)."""
    ev_cfg = _cfg_dict(cfg.evaluator)
    if ev_cfg["name"] == "proxy":
        return AccuracySource(ProxyEvaluator(cfg.deploy_num_classes), ProxyEvaluator.label, None, "proxy",
                              record=dict(evaluator="proxy", label=ProxyEvaluator.label, weights=None))
    data_name = cfg.data.get("name") if cfg.get("data") is not None else None
    if ev_cfg["name"] == "predictor" and cfg.get("checkpoint"):
        # a supernet given is a supernet to score with (the predictor reads no checkpoint)
        from .config import SupernetEvaluatorConfig
        print(f"checkpoint={cfg.checkpoint} given: the accuracy is that supernet's top-1 (evaluator=supernet; "
              "the default accuracy predictor reads no checkpoint)", file=sys.stderr)
        ev_cfg = dataclasses.asdict(SupernetEvaluatorConfig())
    if ev_cfg["name"] == "predictor":
        from hwnas.predictor import AccuracyPredictor
        pred = AccuracyPredictor.load(ev_cfg["path"]) if ev_cfg.get("path") else AccuracyPredictor.shipped(space.name)
        pred.check_space(space.name)
        if data_name not in (None, DEFAULT_DATA, pred.source["data"]):
            raise SearchError(f"data={data_name}: the accuracy predictor (the default evaluator) predicts top-1 on "
                              f"{pred.source['data']} from the arch alone and reads no data; to score archs on "
                              f"{data_name}, give evaluator=supernet checkpoint=SUPERNET (python -m hwnas.train "
                              f"data={data_name}), or evaluator=supernet alone for the built-in short supernet "
                              "(a smoke test)")
        # the arch's own resolution: the predictor encodes the deployment arch, whatever the data's size
        return AccuracySource(pred, pred.label, None,
                              json.dumps(dict(predictor=pred.digest, space=space.name), sort_keys=True),
                              record=dict(evaluator="predictor", label=pred.label, weights=None, caution=pred.caution,
                                          consistent_only=pred.consistent_only,
                                          predictor=dict(path=pred.path, digest=pred.digest, **pred.source)))
    from .supernet_cache import ensure_checkpoint
    from hwnas.data import fingerprint_view
    from hwnas.evaluate import SubnetEvaluator
    ckpt = ensure_checkpoint(cfg, space)
    data_cfg = cfg.data
    kwargs = {k: v for k, v in ev_cfg.items() if k != "name"}
    evaluator = SubnetEvaluator.from_checkpoint(ckpt, data_cfg, space=space, **kwargs)
    res = getattr(evaluator, "resolution", None) or _data_resolution(data_cfg)
    label = f"top-1 % on {data_name or 'data'} val"
    builtin = not cfg.get("checkpoint")
    if builtin:
        label = f"{SMOKE_TEST}: {label}"
    digest = _file_digest(Path(ckpt))
    return AccuracySource(evaluator, label, res,
                          accuracy_fingerprint(evaluator.net, ev_cfg, data_cfg),
                          lambda: json.dumps(dict(ckpt=digest, evaluator=ev_cfg,
                                                  data={k: v for k, v in fingerprint_view(data_cfg).items()
                                                        if k != "on_bad_image"}), sort_keys=True),
                          record=dict(evaluator="supernet", label=label, builtin=builtin,
                                      consistent_only=evaluator.consistent_only,
                                      weights=dict(checkpoint=str(Path(ckpt).resolve()), sha1_16=digest,
                                                   num_classes=int(evaluator.net.num_classes)),
                                      data=_cfg_dict(data_cfg)))


ACCURACY_SOURCE = "accuracy_source.json"
LATENCY_SOURCE = "latency_source.json"
RUN_STUDY = "study.json"  # which study a run folder's outputs (report, picks, trials) are of
#: the fix for a study that cannot take this search: a run folder holds one study's outputs
ELSEWHERE = "search in another folder (hydra.run.dir=DIR; with a shared storage=, also another study_name=)"


def write_latency_source(run_dir: Path, tables: dict[str, Path]) -> None:
    """Record in the run folder which latency table predicted each target (absolute paths): `hwnas.extract
    run=DIR` predicts with them too and compiles `format=aoti` as a torch_inductor table among them timed, also
    where the table is not a shipped one (profiled here, adapted, or given as target.table=)."""
    from hwnas._files import atomic_write
    atomic_write(run_dir / LATENCY_SOURCE, json.dumps({name: str(Path(p).resolve()) for name, p in tables.items()},
                                                      indent=1, sort_keys=True) + "\n")


def _write_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """`.hydra/` (the app turns Hydra's own writing off): written once the study is this search's, so a
    refused rerun leaves the folder's record of the run that made it."""
    from hwnas._files import atomic_write
    from hwnas.cli import hydra_files
    for name, text in hydra_files(cfg).items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / name, text)


def write_run_study(run_dir: Path, study_name: str) -> None:
    from hwnas._files import atomic_write
    atomic_write(run_dir / RUN_STUDY, json.dumps({"study_name": study_name}) + "\n")


def _check_folder(run_dir: Path, study_name: str) -> None:
    """A run folder holds one study's outputs: another study's search there would replace its report,
    trials and picks, and `hwnas.extract run=DIR` would then read the other study's picks."""
    try:
        theirs = json.loads((run_dir / RUN_STUDY).read_text()).get("study_name")
    except (OSError, ValueError, AttributeError):
        return  # a folder of an older hwnas (or none yet)
    if theirs is not None and theirs != study_name:
        raise SearchError(f"{run_dir} holds the outputs of study {theirs!r}; this search is study {study_name!r} "
                          f"and would replace them: {ELSEWHERE} (the default folder is one per target, space "
                          f"and strategy)")


def write_accuracy_source(run_dir: Path, acc: "AccuracySource") -> None:
    """Record in the run folder where the search's accuracies come from: the evaluator, and for a
    supernet its checkpoint's path and content hash (what `hwnas.extract run=DIR` carries)."""
    from hwnas._files import atomic_write
    if acc.record is not None:
        atomic_write(run_dir / ACCURACY_SOURCE, json.dumps(acc.record, indent=1, sort_keys=True) + "\n")


def accuracy_fingerprint(net, evaluator_cfg: dict, data_cfg) -> str:
    """What determines a search's accuracies: the supernet's weights (not the file, which also holds
    the training's timings: a retrained supernet with the same weights is the same), its space and
    resolution, the evaluator's settings and the data."""
    from hwnas.checkpoint import weights_digest
    from hwnas.data import fingerprint_view
    data = {k: v for k, v in fingerprint_view(data_cfg).items() if k not in _NOT_RESULTS}
    return json.dumps(dict(weights=weights_digest(net.state_dict()), space=net.space.name,
                           resolution=int(net.resolution), num_classes=int(net.num_classes),
                           evaluator=evaluator_cfg, data=data), sort_keys=True)


def _data_resolution(data_cfg) -> int | None:
    if data_cfg is None:
        return None
    for key in ("image_size", "resolution", "img_size"):
        if data_cfg.get(key):
            return int(data_cfg.get(key))
    return None


def resolve_references(cfg: DictConfig, space: search_spaces.SearchSpace) -> list[str]:
    names = list(cfg.references) if cfg.references is not None else list(space.reference_names)
    bad = [n for n in names if n not in space.reference_names]
    if bad:
        raise SearchError(f"references: unknown reference {bad[0]!r} of space {space.name!r} "
                          f"(allowed: {list(space.reference_names)})")
    return names


# ---- the app ----------------------------------------------------------------------------------------
def run(cfg: DictConfig, run_dir: Path, accuracy: AccuracySource | None = None) -> dict:
    """Run the search the config describes; returns {"report": path, "picks": ..., ...}.

    `accuracy` replaces the evaluator the config names (experiments share one across runs). The
    trials' CPU thread count (`thread_policy`) is the search's own: the caller's is restored on return.
    """
    import torch
    threads = torch.get_num_threads()
    try:
        return _run(cfg, run_dir, accuracy)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _run(cfg: DictConfig, run_dir: Path, accuracy: AccuracySource | None) -> dict:
    from hwnas.cli import check_config
    targets = resolve_targets(cfg)
    names = [str(t.name) for t in targets]
    check_config(cfg)  # every schema's ranges (the app did this at start-up already)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    space = get_space_from_cfg(cfg.space, cfg.get("task"), cfg.get("input"))
    strategy = _cfg_dict(cfg.search)
    directions(list(strategy["objectives"]))  # the configured names, before per-target expansion
    objectives = expand_objectives(list(strategy["objectives"]), names)
    strategy["objectives"] = objectives  # what the strategies tell Optuna
    dirs = directions(objectives)
    share_cores = thread_policy(cfg.get("threads"), *default_busy_cores(cfg.get("threads")))

    latency_targets, target_reports, reasons = [], [], {}
    for target in targets:
        table, table_path = load_table(target, space, several=len(targets) > 1)
        if table.is_estimated:
            print(f"note: the {target.name} latency table is ESTIMATED, not measured on the device "
                  f"({table_path})", file=sys.stderr)
        warnings = table_warnings(table, space, table_path)
        for w in warnings:
            print(f"WARNING: {w}", file=sys.stderr)
        reasons[target.name] = table_reason(target, space)
        print(f"{target.name} latency table: {table_path} ({reasons[target.name]})", file=sys.stderr)
        mes = MES.for_target(_cfg_dict(target.get("mes")), table.provenance, target.name)
        latency_targets.append(LatencyTarget(target.name, table.predict, mes, bool(table.is_estimated)))
        target_reports.append((target, table, table_path, mes, warnings))
    acc = accuracy or build_evaluator(cfg, space)
    acc_label, eval_res = acc.label, acc.resolution
    acc_caution = (acc.record or {}).get("caution")
    if acc_caution:
        print(f"WARNING: {acc_caution}", file=sys.stderr)
    space = searched_space(space, acc)
    archs_note = CONSISTENT_NOTE.format(space=space.name) if space.consistent else None
    if archs_note:
        print(f"note: {archs_note}", file=sys.stderr)
    scorer = Scorer(latency_targets, acc.evaluator, cfg.deploy_num_classes, eval_res)

    references = resolve_references(cfg, space)
    ref_archs = {n: space.reference(n) for n in references}
    ref_cost = {n: scorer.cost(a) for n, a in ref_archs.items()}
    budget = resolve_budget(cfg, names)
    budget_from = "given"
    strategy_impl = get_strategy(strategy["name"])
    if strategy_impl.needs_budget and budget.empty:  # e.g. mes_greedy: slim until every reference's budget holds
        budget = Budget({t: min(c.latency[t] for c in ref_cost.values()) for t in names},
                        min(c.params for c in ref_cost.values()))
        budget_from = "references"

    storage = cfg.storage or study_mod.default_storage(run_dir)
    setting = "" if space.scope == space.name else "-" + space.scope.split(":", 1)[1].replace("@", "-")
    if space.consistent:
        setting += "-consistent"
    study_name = cfg.study_name or f"{'+'.join(names)}-{space.name}{setting}-{strategy['name']}"
    _check_folder(run_dir, study_name)
    sampler_seed = cfg.seed
    study = study_mod.open_study(storage, study_name, dirs, strategy_impl.sampler(strategy, sampler_seed),
                                 retry_s=cfg.storage_retry_s)
    _check_study(study, objectives, acc, storage, study_name)
    _check_budget(study, budget, storage, study_name, run_dir)
    _check_costs(study, scorer, names, storage, study_name, run_dir)
    # the folder's records only once the study has been found to be this search's
    write_accuracy_source(run_dir, acc)
    write_latency_source(run_dir, {t.name: path for t, _, path, _, _ in target_reports})
    write_run_study(run_dir, study_name)
    _write_hydra_files(run_dir, cfg)
    study_mod.name_metrics(study, objectives)
    # a resumed or shared study must not replay the first run's random stream
    before = study.get_trials(deepcopy=False)
    n_before = len(before)
    if n_before:
        study.sampler = strategy_impl.sampler(strategy, cfg.seed + 7919 * n_before
                                              + (0 if cfg.storage is None else _pid()))
        n_done, wanted = sum(t.state.name == "COMPLETE" for t in before), strategy.get("n_trials")
        if wanted is not None and n_done >= wanted:  # a rerun with another seed= looks like a new search
            print(f"note: study {study_name!r} already holds {n_done} completed trials (search.n_trials={wanted}): "
                  f"nothing new runs, and its results are reported as they are; another seed or strategy setting "
                  f"searches again in another folder (hydra.run.dir=DIR)", file=sys.stderr)

    greedy = strategy_impl.run(SearchRun(
        study, space, scorer, strategy, budget, seed=cfg.seed, progress=cfg.progress,
        stale_after_s=cfg.stale_after_s, on_local_workers=share_cores,
        seed_archs=seed_archs(space, strategy.get("seed_archs") or [], list(ref_archs.values()))))

    # references: accuracy cached in the study, so reruns and other workers do not re-evaluate
    ref_metrics = {}
    for n, arch in ref_archs.items():
        key = f"reference:{n}:{arch.id}"
        cached = study.user_attrs.get(key)
        if cached is not None:
            scorer.accuracies.setdefault(arch.id, cached)
        m = scorer.metrics(arch)
        if cached is None:
            study.set_user_attr(key, m.accuracy)
        ref_metrics[n] = dict(arch_id=arch.id, **m.as_dict())

    trials = study.get_trials(deepcopy=False)
    records = records_from_trials((t for t in trials if t.state.name == "COMPLETE"), names)
    counts = dict(completed=len(records),
                  invalid=sum(1 for t in trials if t.state.name == "PRUNED"),
                  repaired=sum(1 for r in records if r["repaired"]), evaluations=scorer.evaluations)
    reports = [TargetReport(t.name, path, f"{tab.describe().rstrip('.')}. Table chosen: {reasons[t.name]}.",
                            bool(tab.is_estimated), m.describe(), w)
               for t, tab, path, m, w in target_reports]
    lat_budget = dict(budget.latency_ms) or None
    if lat_budget is not None and len(names) == 1:
        lat_budget = lat_budget[names[0]]
    ctx = ReportContext(
        targets=reports, space=space.name, strategy=strategy["name"], objectives=objectives,
        resolution=space.input_size, task=space.task, eval_resolution=eval_res, accuracy_label=acc_label,
        accuracy_caution=acc_caution, archs_note=archs_note,
        num_classes=cfg.deploy_num_classes, study_name=study_name,
        storage=storage, budget=dict(latency_ms=lat_budget,
                                     params_m=None if budget.params is None else budget.params / 1e6),
        budget_from=budget_from,
        counts=counts,
        skipped_images=_skipped(acc.evaluator))
    verification = None
    picks = write_outputs(run_dir, records, objectives, ref_metrics, ctx, greedy)
    if cfg.verify:
        from .verify import verify_picks
        verification = verify_picks(picks, [(t, tab) for t, tab, *_ in target_reports],
                                    ctx.given_budget)
        picks = write_outputs(run_dir, records, objectives, ref_metrics, ctx, greedy, verification)
    print(summary_text(picks, ref_metrics, ctx, run_dir, len(records), records))
    return dict(report=run_dir / "report.md", picks=picks, references=ref_metrics, records=records,
                study=study, greedy_path=greedy, verification=verification, targets=names)


def _skipped(evaluator) -> dict:
    """Unreadable images the supernet's training and this search's evaluation left out."""
    out = {"training": dict(getattr(evaluator, "training_skipped", None) or {})}
    if hasattr(evaluator, "skipped_images"):
        out["evaluation"] = evaluator.skipped_images()
    return out


def seed_archs(space: search_spaces.SearchSpace, which: list[str], references: list) -> list:
    table = {"min": lambda: [space.min_arch()], "max": lambda: [space.max_arch()], "references": lambda: references}
    bad = [w for w in which if w not in table]
    if bad:
        raise SearchError(f"search.seed_archs: unknown entry {bad[0]!r} (allowed: {list(table)})")
    return [a for w in which for a in table[w]()]


def _pid() -> int:
    import os
    return os.getpid()


def _budget_record(budget: Budget) -> dict:
    return {"latency_ms": dict(sorted(budget.latency_ms.items())), "params": budget.params}


def _check_budget(study, budget: Budget, storage: str, name: str, run_dir: Path) -> None:
    """A study keeps one budget: its trials' constraint values (Optuna's feasibility, which the
    samplers and the fronts use) were computed against it. A study of an older hwnas, which did not
    record its budget, takes this run's."""
    mine = _budget_record(budget)
    theirs = study.user_attrs.get("budget")
    if theirs is None:
        study.set_user_attr("budget", mine)
        return
    if theirs != mine:
        def words(b: dict) -> str:
            parts = [f"latency on {t} <= {ms} ms" for t, ms in b["latency_ms"].items()]
            parts += [] if b["params"] is None else [f"params <= {b['params'] / 1e6:g} M"]
            return ", ".join(parts) or "none"
        raise SearchError(f"study {name!r} in {storage} was searched under the budget {words(theirs)}; this run "
                          f"asks for {words(mine)}, and its trials' feasibility was judged against the first one: "
                          f"{ELSEWHERE.replace('=DIR', f'={run_dir}-b2')}, or with the study's budget")


def _check_costs(study, scorer: Scorer, names: list[str], storage: str, name: str, run_dir: Path,
                 sample: int = 32) -> None:
    """A study keeps one cost model. Each trial's latency, size and MES were stored when it ran, and
    the front and the picks compare them with references priced now: so a sample of the stored trials
    is priced again, and a trial priced otherwise (another latency table -- which the table choice can
    change under an unchanged command --, another deploy_num_classes, MES constants or deployment
    input) stops the search with one line instead of a report that mixes the two."""
    from optuna.trial import TrialState
    from search_spaces import Arch
    from hwnas.latency import MissingRowsError
    from .report import metric_columns
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "arch" in t.user_attrs]
    keys = [k for k in metric_columns(names) if k != "accuracy"]

    def repriced(t) -> str | None:
        """How this run prices trial `t` otherwise than it was stored, or None."""
        try:
            now = scorer.cost(Arch.from_dict(json.loads(t.user_attrs["arch"]))).as_dict()
        except MissingRowsError as e:
            return f"this run's latency table has no row for {e.keys[0]}"
        diff = next((k for k in keys if not math.isclose(float(t.user_attrs[k]), float(now[k]),
                                                          rel_tol=1e-9, abs_tol=1e-12)), None)
        return None if diff is None else f"was stored with {diff}={t.user_attrs[diff]:.6g}, this run gives {now[diff]:.6g}"

    for t in done[::max(1, len(done) // sample)]:
        why = repriced(t)
        if why is None:
            continue
        try:
            was = "; it was searched with " + ", ".join(
                f"{k}: {v}" for k, v in json.loads((run_dir / LATENCY_SOURCE).read_text()).items())
        except (OSError, ValueError, AttributeError):
            was = ""
        raise SearchError(f"study {name!r} in {storage} holds trials priced by another cost model (trial "
                          f"{t.number}, arch {t.user_attrs.get('arch_id')}, {why}): another latency table, "
                          f"deploy_num_classes, MES constants or deployment input{was}: {ELSEWHERE}, or with the "
                          "settings it was searched with")


def _check_study(study, objectives: list[str], acc: AccuracySource, storage: str, name: str) -> None:
    """A study keeps one meaning: the same objectives and the same source of accuracy."""
    attrs = study.user_attrs
    fingerprint = acc.fingerprint
    if "objectives" not in attrs:
        # the accuracy source first: a worker that sees the objectives sees it too, also one that
        # reads the study between these two writes (with the objectives first it read no source:
        # "another checkpoint", seen with workers starting together on a server)
        study.set_user_attr("accuracy_source", fingerprint)
        study.set_user_attr("objectives", objectives)
        return
    if attrs["objectives"] != objectives:
        raise SearchError(f"study {name!r} in {storage} has objectives {attrs['objectives']}, not "
                          f"{objectives}: {ELSEWHERE}")
    if attrs.get("accuracy_source") != fingerprint and acc.legacy_fingerprint is not None \
            and attrs.get("accuracy_source") == acc.legacy_fingerprint():
        study.set_user_attr("accuracy_source", fingerprint)  # a study of an older hwnas: same checkpoint file
        return
    if attrs.get("accuracy_source") != fingerprint:
        raise SearchError(f"study {name!r} in {storage} was evaluated with another checkpoint, "
                          "evaluator or data: its cached accuracies would not compare; "
                          f"{ELSEWHERE}")
