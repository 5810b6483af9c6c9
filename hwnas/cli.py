"""How the four apps start and fail: one runner for `python -m hwnas.{profile,train,search,extract}`.

    run_app("train", "train", task, register=register)    # task(cfg, run_dir)

Before Hydra makes the run directory, the runner composes the app's config with the command line
itself and checks it (`preflight`): a misspelt key or option, a value of the wrong type, a value
out of range (every typed schema's `__post_init__`), a missing mandatory value, and a run folder
that cannot be written. So nonsense fails at start-up -- before any training, table loading or
file written -- and an earlier run's folder is left as it was. Then Hydra composes the same config,
makes the run directory and the task runs in it.

Bad input -- a `HwnasError` at start-up or from the task, or the environment refusing a write (a
full disk, a read-only folder) -- is printed as one line, `hwnas.<app>: error: <message>`, and the
app exits with status 2 (`USER_ERROR_EXIT`). Anything else is a bug and keeps its traceback (exit
status 1). Command lines with Hydra's own flags (`--help`, `--cfg`, `-m`, ...) go straight to Hydra.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from hwnas.config import CONF_DIR, register_common
from hwnas.errors import ConfigError, HwnasError

USER_ERROR_EXIT = 2
#: what the environment (not hwnas) refused: reported as one line, like bad input
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def report_user_error(app: str, error: BaseException) -> None:
    """Print `error` the way every app reports bad input: one line on stderr."""
    print(f"hwnas.{app}: error: {' '.join(str(error).split())}", file=sys.stderr)


def environment_message(e: OSError, run_dir: Path | None = None) -> str:
    """One line for an OSError the environment caused (`ENVIRONMENT_ERRNOS`), with the fix.

    Moving the run folder (`hydra.run.dir=`) is suggested only for a file inside it: a file elsewhere
    (a cache, a table folder, an `out=` path) was named by another option, which the line points at."""
    where = f"{e.filename}: " if e.filename else ""
    elsewhere = _elsewhere(e.filename, run_dir)
    fix = {errno.ENOSPC: f"the disk is full: free some space on it, or {elsewhere}",
           errno.EDQUOT: f"your disk quota is used up: free some of it, or {elsewhere}",
           errno.EFBIG: f"the file grew beyond the size allowed here (ulimit -f): raise the limit, or {elsewhere}",
           errno.EROFS: f"that file system is read-only; {elsewhere}"}.get(
        e.errno, f"check the permissions of that path, or {elsewhere}")
    return f"{where}{e.strerror or os.strerror(e.errno)}; {fix}"


def _elsewhere(filename, run_dir: Path | None) -> str:
    if filename is None or run_dir is None:
        return "write elsewhere (the option that names that folder, or hydra.run.dir=DIR for the run folder)"
    path, run = Path(os.fsdecode(filename)).resolve(), Path(run_dir).resolve()
    if path == run or run in path.parents:
        return "choose another run folder (hydra.run.dir=DIR)"
    return f"give the option that names {path.parent} another folder (that path is not in the run folder {run})"


#: what an interrupted app kept and how to resume it (`run_app`'s `interrupted`): the default
INTERRUPTED = "what it finished is kept in {run_dir}; rerun the same command to do it again"
INTERRUPT_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def run_app(app: str, config_name: str, task: Callable[[Any, Path], Any],
            register: Callable[[], None] | None = None, schema: type | None = None,
            interrupted: str | Callable[[Any, Path], str] = INTERRUPTED,
            preload: Callable[[Any], bool] | None = None) -> None:
    """Run `task(cfg, run_dir)` as the Hydra app `hwnas.<app>` on `conf/<config_name>.yaml`.

    `register` stores the app's typed schemas in Hydra's ConfigStore first (so a misspelt key fails
    at start-up, by name); `schema`, a dataclass, checks an app whose YAML names none. Ctrl-C ends
    the app with one line, `interrupted` (a format string of `run_dir`, or a function of the config
    and the run folder): what was kept and how to resume. `preload(cfg)`: whether the run loads
    compiled packages that need g++'s libstdc++ preloaded (`hwnas.export.loads_cxx_packages`, which
    asks the registered targets and formats); the app, started as itself, then restarts with it.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig

    register_common()
    if register is not None:
        register()
    try:
        cfg = preflight(config_name, sys.argv[1:], schema)
    except HwnasError as e:
        report_user_error(app, e)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print(f"hwnas.{app}: interrupted (Ctrl-C) before it started; nothing was written", file=sys.stderr)
        sys.exit(INTERRUPT_EXIT)
    if cfg is not None and preload is not None and preload(cfg) and started_as(app):
        import torch  # noqa: F401 -- maps the libstdc++ this process will run, which the plan compares
        from hwnas.convert.cxx_runtime import ensure_preloaded
        ensure_preloaded()  # restarts this process with g++'s libstdc++ preloaded where that is safe and not yet so

    def main(cfg) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        sweep_leftovers(run_dir)
        try:
            task(cfg, run_dir)
        except HwnasError as e:
            report_user_error(app, e)
            sys.exit(USER_ERROR_EXIT)
        except OSError as e:
            if e.errno not in ENVIRONMENT_ERRNOS:
                raise
            report_user_error(app, environment_message(e, run_dir))
            sys.exit(USER_ERROR_EXIT)
        except KeyboardInterrupt:
            try:
                said = interrupted(cfg, run_dir) if callable(interrupted) else interrupted.format(run_dir=run_dir)
            except Exception:  # noqa: BLE001 -- the line must come out whatever the config holds
                said = INTERRUPTED.format(run_dir=run_dir)
            print(f"hwnas.{app}: interrupted (Ctrl-C); {said}", file=sys.stderr, flush=True)
            sys.exit(INTERRUPT_EXIT)

    # Hydra names the job (and its log file) after the module that defines the task function.
    main.__module__ = f"hwnas.{app}"
    main.__qualname__ = main.__name__ = app
    hydra.main(version_base=None, config_path=str(CONF_DIR), config_name=config_name)(main)()


def started_as(app: str) -> bool:
    """Was this process started as the app itself (`python -m hwnas.<app>`)? Only then may it restart
    itself (`ensure_preloaded` re-executes the process's own command line): an app run from inside
    another program (a test runner, a notebook) is left alone, and `load_aoti`'s probe guards its loads."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name in (f"hwnas.{app}", f"hwnas.{app}.__main__")


def sweep_leftovers(run_dir: Path) -> None:
    """What killed hwnas processes left (SIGKILL runs no cleanup): scratch folders in the system temp
    folder, registered temporary exports anywhere, temporary files in this run folder. Every app
    removes them at start-up, whichever app was killed; a live process's are never touched."""
    import logging

    from hwnas._files import remove_stale_temps, sweep_dead_temps
    removed = sweep_dead_temps() + remove_stale_temps(run_dir)
    if removed:
        logging.getLogger("hwnas").info("removed %d temporary file(s)/folder(s) that killed hwnas runs left: %s",
                                        len(removed), ", ".join(str(p) for p in removed[:5])
                                        + (" ..." if len(removed) > 5 else ""))


# ---- start-up checks ------------------------------------------------------------------------------
def preflight(config_name: str, overrides: Sequence[str], schema: type | None = None):
    """Compose `conf/<config_name>.yaml` with the command-line `overrides` as Hydra will, and check
    it: every typed schema instantiated (ranges), nothing mandatory missing, the run folder
    writable. Raises `ConfigError` naming the problem; returns the app's config (without `hydra`),
    or None when the command line is Hydra's own (`--help`, `-m`, ...) or Hydra is already running."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    if any(a.startswith("-") for a in overrides) or GlobalHydra.instance().is_initialized():
        return None
    holder = HydraConfig.instance()
    saved = holder.cfg
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            try:
                cfg = compose(config_name, list(overrides), return_hydra_config=True)
            except Exception as e:  # noqa: BLE001 -- Hydra's and OmegaConf's errors, as one line
                raise ConfigError(hydra_message(e, schema)) from _cause_or_none(e)
            holder.set_config(cfg)  # for ${hydra:...} in the run folder's name
            try:
                run_dir = Path(str(cfg.hydra.run.dir))
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"hydra.run.dir: {hydra_message(e)}") from None
            with open_dict(cfg):
                del cfg["hydra"]
            check_config(cfg, schema)
            check_run_dir(run_dir)  # last: a valid config only makes the folder
            return cfg
    finally:
        holder.cfg = saved


def _cause_or_none(e: BaseException):
    return None if _is_hydra_error(e) else e


def _is_hydra_error(e: BaseException) -> bool:
    mod = type(e).__module__
    return mod.startswith(("hydra.", "omegaconf.")) or mod in ("hydra", "omegaconf")


def hydra_message(e: BaseException, schema: type | None = None) -> str:
    """One line from a Hydra or OmegaConf error: what is wrong, and the allowed options or keys
    (`schema`: the dataclass of the whole config, where the node's own type is not known)."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if not _is_hydra_error(e):
        raise e  # a bug: keep its traceback
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options:
        group, _, name = str(e.missing_cfg_file).rpartition("/")
        return f"{group}={name}: no such option (the options of {group}: {', '.join(e.options)})"
    if isinstance(e, OverrideParseException):
        return (f"cannot read the command line: {' '.join(str(e).splitlines()[0].split())} (Hydra's override "
                "grammar: quote a value holding '=', ',' or brackets, e.g. 'key=[\"a=1\",\"b=2\"]')")
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else (
        e if isinstance(e, OmegaConfBaseException) else None)
    head = " ".join(str(e).split("\nSee https")[0].split("Config search path:")[0].split())
    if cause is None:
        return head
    key = getattr(cause, "full_key", None) or "config"
    what = str(cause).split("\n    full_key:")[0].strip().splitlines()[0]
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        parent = key.rpartition(".")[0]
        unknown_key = getattr(getattr(cause, "object_type", None), "unknown_key", None)
        if callable(unknown_key) and parent and "." not in parent:  # a schema that names itself (a dataset)
            return unknown_key(key.rpartition(".")[2])
        keys = _field_names(getattr(cause, "object_type", None)) or (_keys_at(schema, parent) if schema else [])
        parent = parent or "the config"
        return f"{key}: no such key" + (f" (the keys of {parent}: {', '.join(keys)})" if keys else f" ({what})")
    return f"{key}: {what}" + ("" if cause is e else f" ({head})")


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def hydra_files(cfg: Any) -> dict[str, str]:
    """What Hydra writes to `.hydra/` (config, hydra, overrides), for an app that turns Hydra's own
    writing off (`hydra.output_subdir: null`) to write them itself once its checks have passed: a
    refused or failed run then leaves an earlier run's `.hydra/` describing the run that made it.
    {} outside a Hydra run (an app's `run` called from Python)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {".hydra/config.yaml": OmegaConf.to_yaml(cfg), ".hydra/hydra.yaml": OmegaConf.to_yaml({"hydra": hc}),
            ".hydra/overrides.yaml": OmegaConf.to_yaml(hc.overrides.task)}


def check_config(cfg, schema: type | None = None):
    """Instantiate every typed schema in `cfg` (their `__post_init__` checks the values); a key a
    schema does not have (also one appended with `+key=`) or a value left mandatory (`???`) is a
    `ConfigError` naming it. `schema`: the dataclass of the whole config, when its YAML names none.
    Returns the config (merged onto `schema` when given)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        if schema is not None:
            cfg = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        _no_extra_keys(cfg, "")
        OmegaConf.to_object(cfg)
        return cfg
    except MissingMandatoryValue as e:
        key = e.full_key or "a value"
        raise ConfigError(f"{key} is not set: give it on the command line ({key}=...)") from None
    except OmegaConfBaseException as e:
        raise ConfigError(hydra_message(e, schema)) from None


def _no_extra_keys(node, path: str) -> None:
    """Every key of a typed node is a field of its dataclass (`+key=` can append one to it)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    if isinstance(node, DictConfig):
        keys = _field_names(OmegaConf.get_type(node))
        unknown_key = getattr(OmegaConf.get_type(node), "unknown_key", None)  # a schema that names itself (a dataset)
        for k in node.keys():
            name = f"{path}.{k}" if path else str(k)
            if keys and k not in keys and callable(unknown_key) and path and "." not in path:
                raise ConfigError(unknown_key(str(k)))
            if keys and k not in keys:
                raise ConfigError(f"{name}: no such key (the keys of {path or 'the config'}: {', '.join(keys)})")
            if not OmegaConf.is_missing(node, k) and not OmegaConf.is_interpolation(node, k):
                _no_extra_keys(node[k], name)
    elif isinstance(node, ListConfig):
        for i, v in enumerate(node):
            _no_extra_keys(v, f"{path}[{i}]")


def _keys_at(schema, path: str) -> list[str]:
    """The field names of the dataclass at `path` (dots) inside dataclass `schema`."""
    import typing
    cls = schema
    for part in [p for p in path.split(".") if p]:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        cls = hints.get(part)
    return _field_names(cls)


def check_run_dir(run_dir: Path) -> None:
    """The run folder exists or can be made, and a file can be written in it (and in its `.hydra/`):
    tried for real, since permissions alone do not tell (root, read-only mounts, special folders)."""
    import tempfile
    probe = run_dir
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"hydra.run.dir={run_dir}: {probe} is a file, not a folder; choose another "
                          "run folder with hydra.run.dir=DIR")
    folders = [run_dir] + ([run_dir / ".hydra"] if (run_dir / ".hydra").exists() else [])
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        for d in folders:
            fd, name = tempfile.mkstemp(prefix=".hwnas-probe-", dir=d)
            os.close(fd)
            os.unlink(name)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ConfigError(f"hydra.run.dir={run_dir}: the disk is full ({e.strerror or e}); free some space on it, "
                              "or choose a run folder on another disk with hydra.run.dir=DIR") from None
        raise ConfigError(f"hydra.run.dir={run_dir}: cannot write there ({e.strerror or e}); choose a folder you "
                          "can write with hydra.run.dir=DIR") from None


__all__ = ["ENVIRONMENT_ERRNOS", "INTERRUPTED", "INTERRUPT_EXIT", "USER_ERROR_EXIT", "check_config", "check_run_dir", "environment_message",
           "hydra_message", "preflight", "report_user_error", "run_app"]
