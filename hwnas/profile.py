"""`python -m hwnas.profile +target=T space=S`: build the latency table of a space on a target.

Measures every block of `space.all_blocks()` (or only those of `archs=[...]`) into
`<tables_dir>/T/<device>.csv` + `.json` (a folder of the user's, `outputs/latency_tables` by default,
or the table `out=PATH.csv`; never the tables shipped in the package), resuming where a killed run stopped, then measures the
references and `n_fit` random subnets end to end and fits the Σ-blocks correction. The run works in
`<device>.partial.csv` and replaces the table only when done, so a killed run never leaves a
half-made table for a search to pick (a rerun resumes). Rows and networks whose fingerprint no
longer matches the code are measured again; the rest is kept. `fidelity=N` then measures N
held-out subnets (disjoint from the fit set) and writes how well the table predicts them into its
provenance (and `latency_fidelity_<target>_<space>.{json,png}` into the run directory). For
`coreml` on a machine that cannot time Core ML (Linux), it writes a bundle for a Mac instead, and
`coreml.import_csv=PATH` merges the Mac's results back. `adapt=N` instead adapts an existing table of
the target (or, for a target without one, of a target it `adapts_from`: torch_inductor from torch_cuda)
to this device from N whole networks measured here (`hwnas.latency.adapt`): minutes, not a full profile.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from hwnas.config import SpaceConfig, get_space_from_cfg, register_common
from hwnas.errors import ConfigError, check_min
from hwnas.latency.table import PARTIAL, TABLES_DIR, USER_TABLES_DIR, search_hint
from hwnas.latency.target import store_schemas as store_target_schemas

log = logging.getLogger("hwnas.profile")


@dataclass
class CoreMLProfileConfig:
    bundle_dir: Optional[str] = None
    import_csv: Optional[str] = None
    n_fit: int = 30

    def __post_init__(self):
        # checked before the top-level n_fit, which it follows unless set (profile.yaml: ${n_fit})
        check_min("coreml", "n_fit", self.n_fit, 0, hint="it is n_fit unless set: give n_fit=0 or more")


@dataclass
class ProfileConfig:
    space: SpaceConfig = MISSING
    target: Any = None  # +target=NAME: one of hwnas/conf/target/ (each with its own schema)
    task: str = "classify"  # classify | backbone (stem and stages only: no head is timed)
    input: Optional[Any] = None  # [H, W] (or one int); null: the space's resolution
    tables_dir: Optional[str] = None
    out: Optional[str] = None
    archs: list[str] = field(default_factory=list)
    n_fit: int = 30
    fit_seed: int = 0
    limit: Optional[int] = None
    fidelity: int = 0
    fidelity_seed: int = 0
    # adapt=N: instead of profiling, adapt an existing table of the target to this device from N whole
    # networks measured here (hwnas.latency.adapt), then measure `fidelity` (30 when 0) fresh held-out subnets
    adapt: int = 0
    # the table to adapt; null: the best complete full profile of the target under tables_dir, else of a
    # target it adapts_from (torch_inductor: torch_cuda's)
    adapt_from: Optional[str] = None
    adapt_stop: Optional[float] = None  # stop measuring once the fit's leave-one-out error is <= this (e.g. 0.02)
    progress: bool = True
    coreml: CoreMLProfileConfig = field(default_factory=CoreMLProfileConfig)

    def __post_init__(self):
        if self.target is None:
            raise ConfigError(choose_target())
        check_min("", "n_fit", self.n_fit, 0)
        check_min("", "limit", self.limit, 1, optional=True, hint="null: every block")
        check_min("", "fidelity", self.fidelity, 0, hint="0: no fidelity run")
        check_min("", "fit_seed", self.fit_seed, 0)
        check_min("", "fidelity_seed", self.fidelity_seed, 0)
        check_min("", "adapt", self.adapt, 0, hint="0: a full profile; N: adapt a table from N whole networks")
        check_min("", "adapt_stop", self.adapt_stop, 0, optional=True, hint="null: measure all N networks")


def choose_target() -> str:
    from hwnas.latency.target import list_targets
    return f"choose a target: python -m hwnas.profile +target=<{'|'.join(list_targets())}> space=S"


def register() -> None:
    """Register the schemas the profile app composes against (idempotent)."""
    from hydra.core.config_store import ConfigStore
    register_common()
    store_target_schemas()
    ConfigStore.instance().store(name="schema_app_profile", node=ProfileConfig)


def load_archs(space, names: list[str]):
    """Reference names or YAML/JSON arch files -> validated Archs."""
    from hwnas.export.pt import read_arch
    out = []
    for n in names:
        p = Path(n)
        if p.suffix in (".yaml", ".yml", ".json") and p.exists():
            out.append(space.coerce(read_arch(p)))
        else:
            out.append(space.coerce(n))
    return out


def run(cfg: DictConfig, run_dir: Path | None = None) -> Path:
    """The profile app as a function of its config; `run_dir` holds a Core ML bundle built here."""
    from hwnas.latency import get_backend
    from hwnas.latency.profiler import run_profile, table_path_for
    from hwnas.latency.target import get_target

    from hwnas.cli import check_config
    if "target" not in cfg or cfg.target is None:
        raise ConfigError(choose_target())
    check_config(cfg)  # every schema's ranges (the app did this at start-up already)
    space = get_space_from_cfg(cfg.space, cfg.get("task"), cfg.get("input"))
    archs = load_archs(space, list(cfg.archs))
    target_cfg: dict[str, Any] = OmegaConf.to_container(cfg.target, resolve=True)
    name = target_cfg.pop("name")
    backend = get_backend(name, **target_cfg)
    out = table_out(cfg.get("out"))
    tables_dir = user_tables_dir(cfg.get("tables_dir"))
    path = out or table_path_for(backend, tables_dir)

    if cfg.get("adapt"):
        from hwnas.latency.adapt import adapted_path, run_adapt
        out = out or adapted_path(path)  # a user folder (never the package), as a full profile's
        _device_check(backend, space, out, cfg.tables_dir)
        table = run_adapt(backend, space, out, int(cfg.adapt),
                          source_path=cfg.adapt_from, tables_dir=cfg.tables_dir, stop_loo=cfg.adapt_stop,
                          held_out=int(cfg.fidelity) or 30, held_out_seed=1000 + cfg.fidelity_seed,
                          results_dir=Path(run_dir or "."), progress=cfg.progress, log=log.info)
        log.info("%s", search_hint(name, table.path, table_out(cfg.get("out"))))
        return table.path

    done = get_target(name).profile_elsewhere(cfg, backend, space, archs, out, tables_dir, run_dir)
    if done is not None:  # a target this machine cannot time (Core ML off macOS) did what it can here
        return done

    _device_check(backend, space, path)
    table = run_profile(backend, space, path, archs=archs or None, n_fit=cfg.n_fit, progress=cfg.progress,
                        limit=cfg.limit, fit_seed=cfg.fit_seed)
    if table.path != path:
        log.info("profile not finished (limit=%s): %d rows in %s; rerun without limit to finish it (the "
                 "table at %s is unchanged)", cfg.limit, len(table.rows), table.path, path)
        return table.path
    if cfg.fidelity:
        from hwnas.latency.fidelity import run_fidelity
        from hwnas.latency.profiler import held_out_set, mark_complete, profile_blocks, specs_for
        # a table of some archs only (archs=[...]) first gets the blocks of the held-out subnets
        held = held_out_set(space, int(cfg.fidelity), exclude=table.correction(space.scope).get("fit_arch_ids") or [],
                            seed=cfg.fidelity_seed)
        missing = [sp for sp in specs_for(space, held) if sp.key not in table.rows]
        if missing:
            log.info("measuring %d blocks of the held-out subnets the table does not have yet", len(missing))
            profile_blocks(backend, table, missing, space.scope, progress=cfg.progress)
            mark_complete(table, space)
            table.save()
        res = run_fidelity(backend, space, table, n=int(cfg.fidelity), seed=cfg.fidelity_seed,
                           results_dir=Path(run_dir or "."), progress=cfg.progress)
        h = res["held_out"]
        log.info("fidelity on %d held-out %s subnets: %.0f%% within ±5%%, %.0f%% within ±10%%, MAPE %.1f%%, "
                 "Kendall tau %.3f (%s)", h["n"], space.scope, 100 * h["within_5pct"], 100 * h["within_10pct"],
                 100 * h["mape"], h["kendall_tau"], table.path.with_suffix(".json"))
    log.info("%s", table.describe())
    log.info("table: %s (%d rows); correction for %s: %s", table.path, len(table.rows), space.scope,
             json.dumps({k: v for k, v in table.correction(space.scope).items() if k in ("form", "a", "b", "loo_mape")}))
    log.info("%s", search_hint(name, table.path, out))
    return table.path


def table_out(out: str | None) -> Path | None:
    """The table path of `out=` (a `.csv`: its `.json`, `.networks.csv` and `.partial.*` go beside it,
    named after it), checked to lie outside the shipped tables."""
    if not out:
        return None
    path = Path(out)
    if path.suffix != ".csv" or path.stem.endswith(PARTIAL):
        # without `.csv`, `<out>.json` (the provenance) would be the `.json` of another table, and the
        # working file's `.json` that of `<out>.csv`: a complete table's provenance overwritten
        stem = path.name.removesuffix(".csv").removesuffix(".json").removesuffix(PARTIAL)
        raise ConfigError(f"out={out}: a table is a .csv file (its .json provenance goes beside it, named after "
                          f"it), and not a {PARTIAL} one; give out={path.with_name(stem + '.csv')}")
    _outside_package(path, f"out={out}")
    return path


def user_tables_dir(tables_dir: str | None) -> Path:
    """The folder of `<target>/<device>.csv` tables this profile writes to (a user folder)."""
    folder = Path(tables_dir or USER_TABLES_DIR)
    _outside_package(folder, f"tables_dir={folder}")
    return folder


def _outside_package(path: Path, what: str) -> None:
    """A profile never writes into the installed `latency_tables` package (site-packages, or the source
    tree of an editable install): those tables ship with hwnas and are replaced only by a release."""
    shipped = TABLES_DIR.resolve()
    target = path.resolve()
    if target == shipped or shipped in target.parents:
        raise ConfigError(f"{what}: that is inside the tables shipped with hwnas ({shipped}), which a profile "
                          f"never writes; profile into a folder of yours (tables_dir=DIR, default "
                          f"{USER_TABLES_DIR}) and search with target.tables_dir=DIR")


def _device_check(backend, space, path: Path, tables_dir=None) -> None:
    """Say which table a search on this machine uses now (the shipped ones, or those of `tables_dir`),
    and that this run makes one for it."""
    from hwnas.latency import LatencyTable, LatencyTableError, default_table_path
    from hwnas.latency.backends import device_note, this_device
    try:
        current = default_table_path(backend.name, space.scope, tables_dir, this_device=this_device(backend.name))
        note = device_note(LatencyTable.load(current), space.scope, current)
    except LatencyTableError:
        return
    if note:
        log.warning("%s This run makes %s for %s.", note, path, backend.device())


def main() -> None:
    from hwnas.cli import run_app
    from hwnas.export import loads_cxx_packages
    run_app("profile", "profile", run, register=register, interrupted=interrupted, preload=loads_cxx_packages)


def interrupted(cfg, run_dir) -> str:
    """Ctrl-C: the blocks measured so far are in the table's `.partial.csv`; the same command resumes."""
    where = (Path(cfg.out).with_suffix("").as_posix() + PARTIAL + ".csv" if cfg.get("out")
             else f"{user_tables_dir(cfg.get('tables_dir'))}/{cfg.target.name}/<device>{PARTIAL}.csv")
    return (f"the blocks measured so far are kept in {where} (never used by a search until complete); "
            "rerun the same command to resume")


if __name__ == "__main__":
    main()
