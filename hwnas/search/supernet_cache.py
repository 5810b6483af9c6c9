"""The supernet a search evaluates with: `checkpoint=`, or a short one trained once and cached.

With no checkpoint, the train app's own config (`python -m hwnas.train`) is composed with the
search's space and data (every setting of them: `data.root`, `data.image_size`, ...) plus
`pretrain.overrides`, hashed, and the supernet trained from it is kept in
`pretrain.cache_dir/<space>-<hash>/supernet.pt`: the next run with the same settings finds it there
instead of training again.

The training runs in `pretrain.cache_dir/.<space>-<hash>.partial/`, a folder named by the
settings, under a lock (`.<space>-<hash>.lock`): a search killed while training resumes it from its
last epoch when run again (the train app's own resume), and a second search with the same settings
waits for the first instead of training the same supernet twice. The finished folder (the
supernet, its metrics and training config; not the optimizer state, which only served resuming)
is renamed into place, so the cache never holds half a supernet. A training that fails before its first
checkpoint leaves nothing behind; every start removes leftovers nobody is using: temporary folders
of older hwnas versions, and partial trainings of other settings untouched for `STALE_PARTIAL_DAYS`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf, open_dict

import search_spaces

from hwnas.checkpoint import CheckpointError, check_file
from hwnas.config import compose
from hwnas._files import atomic_write

TRAIN_CONFIG = "train"  # the train app's primary config (hwnas/conf/train.yaml)
PARTIAL = ".partial"  # suffix of the folder a built-in supernet trains in
STALE_PARTIAL_DAYS = 7.0  # a partial training of other settings untouched this long is removed
OLD_TEMP_HOURS = 1.0  # a temporary folder of an older hwnas (random name, not resumable) this old is removed


def _choices() -> dict:
    try:
        from hydra.core.hydra_config import HydraConfig
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:  # not inside a Hydra app
        return {}


def train_config(cfg: DictConfig, space: search_spaces.SearchSpace) -> DictConfig:
    """The train app's config for the built-in supernet (inside the search app or outside it): the
    search's space and data settings, then `pretrain.overrides` (a `data.*` override there changes
    the training's data only)."""
    choices = _choices()
    groups = [f"space={choices.get('space', space.name)}"]
    if choices.get("data"):
        groups.append(f"data={choices['data']}")
    overrides = list(cfg.pretrain.overrides)
    tcfg = compose(TRAIN_CONFIG, groups + overrides)
    if cfg.get("data") is not None:
        # keys that pretrain.overrides changed in the data group stay as they say; the rest is the search's
        base = compose(TRAIN_CONFIG, groups).data if any(o.lstrip("+~").startswith("data.") for o in overrides) \
            else tcfg.data
        changed = {k: v for k, v in OmegaConf.to_container(tcfg.data).items()
                   if k not in base or OmegaConf.to_container(base)[k] != v}
        with open_dict(tcfg):
            tcfg.data = OmegaConf.merge(cfg.data, changed)
    with open_dict(tcfg):
        tcfg.space = OmegaConf.merge(tcfg.space, cfg.space)
    return tcfg


def ensure_checkpoint(cfg: DictConfig, space: search_spaces.SearchSpace) -> Path:
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            try:
                check_file(path)
            except CheckpointError as e:
                raise CheckpointError(f"checkpoint={cfg.checkpoint}: {str(e).split(': ', 1)[1]} (or leave "
                                      "checkpoint= unset for the built-in supernet)") from None
        return path
    tcfg = train_config(cfg, space)
    text = OmegaConf.to_yaml(tcfg, resolve=True)
    key = hashlib.sha1(text.encode()).hexdigest()[:12]
    root = Path(cfg.pretrain.cache_dir).expanduser()
    name = f"{space.name}-{key}"
    cache, work = root / name, root / f".{name}{PARTIAL}"
    ckpt = cache / "supernet.pt"
    if ckpt.is_file():
        print(f"SMOKE TEST: using the cached built-in short supernet {ckpt} (no checkpoint= given)", file=sys.stderr)
        return ckpt
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{name}.lock"):
        clean_cache(root, keep=name)
        if ckpt.is_file():  # another search trained it while this one waited
            print(f"using the built-in supernet {ckpt} another search just trained", file=sys.stderr)
            return ckpt
        resuming = (work / "train_state.pt").is_file()
        print(f"SMOKE TEST: no checkpoint= given: {'resuming the training of' if resuming else 'training'} the "
              f"built-in short {space.name} supernet ({' '.join(cfg.pretrain.overrides)}) in {work}; cached at "
              f"{ckpt} for the next run. Its top-1s are no accuracy: give checkpoint= a trained supernet, or "
              "leave evaluator= at its default (the shipped accuracy predictor)", file=sys.stderr)
        from hwnas.data import DataError, TooFewSamples
        from hwnas.train import train_supernet
        try:
            out = Path(train_supernet(tcfg, work))
        except TooFewSamples as e:  # the search has no train.batch_size: its key is pretrain.overrides
            if not (work / "train_state.pt").is_file():
                shutil.rmtree(work, ignore_errors=True)
            kept = [o for o in cfg.pretrain.overrides if not o.lstrip("+~").startswith("train.batch_size=")]
            fix = "'pretrain.overrides=[" + ",".join(f'"{o}"' for o in [*kept, "train.batch_size=N"]) + "]'"
            raise DataError(f"the built-in supernet's training: {e.message(fix)}") from None
        except BaseException:
            if not (work / "train_state.pt").is_file():  # nothing to resume from: leave nothing behind
                shutil.rmtree(work, ignore_errors=True)
            else:
                print(f"the built-in supernet's training stopped; {work} keeps its last epoch and the same "
                      "search resumes it", file=sys.stderr)
            raise
        atomic_write(work / "train_config.yaml", text)
        if out != work / "supernet.pt":
            os.replace(out, work / "supernet.pt")
        # the optimizer's state (3x the weights) only served resuming: the cache keeps the supernet
        (work / "train_state.pt").unlink(missing_ok=True)
        if cache.exists():  # a folder without supernet.pt (damaged by hand): replaced
            shutil.rmtree(cache)
        os.replace(work, cache)  # atomic: the cache holds the whole supernet or none
    return ckpt


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (a file beside the cache entries that exists only while held) for
    this block; waits. The holder removes the file before unlocking, so no `.lock` outlives its run;
    a waiter that got the lock of a file removed meanwhile tries again on the new one."""
    while True:
        f = open(path, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _unused(lock: Path) -> bool:
    """Nobody holds the lock of a cache entry (or it has none)."""
    try:
        f = open(lock, "r")
    except FileNotFoundError:
        return True
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
    return True


def _age_s(path: Path) -> float:
    """Seconds since anything in `path` (a folder) last changed."""
    try:
        newest = max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.rglob("*")])
    except OSError:
        return 0.0
    return time.time() - newest


def clean_cache(root: Path, keep: str = "") -> list[Path]:
    """Remove what killed or failed trainings left in the cache folder `root` that nobody uses: a
    temporary folder of an older hwnas (`.<space>-<hash>-<random>`, not resumable) older than
    `OLD_TEMP_HOURS`, and a partial training of other settings than `keep` untouched for
    `STALE_PARTIAL_DAYS`. Returns what was removed."""
    removed = []
    for p in sorted(root.glob(".*")):
        if not p.is_dir():
            continue
        if p.name.endswith(PARTIAL):
            name = p.name[1:-len(PARTIAL)]
            stale = name != keep and _age_s(p) > STALE_PARTIAL_DAYS * 86400 and _unused(root / f".{name}.lock")
        else:  # tempfile.mkdtemp(prefix=".<space>-<hash>-") of hwnas before resumable built-in training
            stale = _age_s(p) > OLD_TEMP_HOURS * 3600
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    if removed:
        print(f"removed {len(removed)} leftover folder(s) of killed built-in trainings from {root}", file=sys.stderr)
    return removed
