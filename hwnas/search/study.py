"""The Optuna study of a search: where it lives, who works on it, and how many trials it still needs.

A study holds exactly `n_trials` completed trials when its workers are done, whatever happened on
the way: a rerun counts the completed trials and runs only the remainder; a trial left RUNNING by
a killed worker of this machine is marked failed at once (its process is gone), one of another
machine (or of no known worker) after `stale_after_s`; and when several workers race for the last
trials, trial numbers decide (a trial beyond the first `n_trials` live ones is dropped before it is
evaluated). A worker returns only when the study is complete: while the last trials run in other
workers it waits, and takes over the slot of one whose worker dies.

Every trial names its worker from the commit that makes it RUNNING (`OwnedTrialStorage`): a worker
killed inside `study.ask()` (the sampler works there, after the trial exists) leaves a trial whose
owner is known to be dead, never an ownerless one that looks alive.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from hwnas.errors import ConfigError

WORKER_ATTR = "worker"  # user attr: host:pid:start-ticks of the process that runs the trial
DROPPED_ATTR = "dropped"  # why a trial was told FAIL without being evaluated
INFEASIBLE_ATTR = "infeasible"  # the ArchError of parameters no repair could make valid


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"


def open_study(storage: str, study_name: str, directions: list[str],
               sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create the study, or load it (same storage and name): that is what resuming is.

    Workers that start together on a fresh database would race to create Optuna's tables (an
    IntegrityError in one of them): on SQLite a file lock serialises the creation; on other
    databases the loser retries.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError
    for attempt in range(6):
        try:
            with _init_lock(storage):
                storage_obj = (sqlite_storage(storage) if storage.startswith("sqlite:///")
                               else OwnedTrialStorage(storage))
                study = optuna.create_study(storage=storage_obj, study_name=study_name,
                                            directions=directions, sampler=sampler, load_if_exists=True)
            break
        except (IntegrityError, OperationalError):
            if attempt == 5:
                raise
            time.sleep(0.5 * (attempt + 1))
        except Exception as e:
            if not _damaged_database(e):
                raise
            where = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else storage
            raise ConfigError(f"study storage {where}: not a readable SQLite database ({_db_message(e)}); move "
                              "it away (the search then starts a new study) or choose another run folder "
                              "(hydra.run.dir=DIR) or storage=") from None
    have = [d.name.lower() for d in study.directions]
    if have != list(directions):
        raise ConfigError(f"study {study_name!r} in {storage} optimises {have}, not {list(directions)}; "
                         "use another study_name= (or the objectives it was made with)")
    return study


def _damaged_database(e: BaseException) -> bool:
    """A database file that is not one, or a damaged one (not a lock or a lost connection)."""
    import sqlite3
    orig = getattr(e, "orig", e)  # SQLAlchemy wraps the driver's error
    return isinstance(orig, sqlite3.DatabaseError) and not isinstance(orig, sqlite3.OperationalError)


def _db_message(e: BaseException) -> str:
    return str(getattr(e, "orig", e)).splitlines()[0]


@contextlib.contextmanager
def _init_lock(storage: str):
    if not storage.startswith("sqlite:///"):
        yield
        return
    import fcntl
    lock = Path(storage[len("sqlite:///"):] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class OwnedTrialStorage(optuna.storages.RDBStorage):
    """An RDBStorage whose trials carry their worker's id (user attr `worker`) from the commit that
    makes them RUNNING, so a trial is never RUNNING without an owner whose liveness can be checked.

    A new trial gets the attr in the transaction that creates it. A WAITING trial (an enqueued seed
    arch) gets it just before the WAITING->RUNNING transition; if another worker wins that race it
    runs the trial and re-stamps it with its own id (`run_trials` does, right after `ask`).
    `_create_new_trial` is overridden because Optuna's cached storage wrapper calls it rather than
    `create_new_trial`; `tests/test_search_cli.py` checks a fresh trial's owner, so a change there fails
    a test instead of silently reopening the gap.
    """

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if template_trial is None:
            template_trial = optuna.trial.create_trial(state=TrialState.RUNNING,
                                                       user_attrs={WORKER_ATTR: worker_id()})
        return super()._create_new_trial(study_id, template_trial)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values=None) -> bool:
        if state == TrialState.RUNNING:
            self.set_trial_user_attr(trial_id, WORKER_ATTR, worker_id())
        return super().set_trial_state_values(trial_id, state, values)


def sqlite_storage(url: str) -> optuna.storages.RDBStorage:
    """An SQLite storage for concurrent workers of one machine, fast on slow disks.

    Optuna commits once per suggested parameter; with SQLite's default rollback journal each
    commit is an fsync (25 ms on our CI disk: 1 s per EfficientFormerV2 trial). Write-ahead
    logging with `synchronous=NORMAL` commits without an fsync yet loses nothing when a process is
    killed (only a power cut can drop the last commits). The long timeout makes concurrent
    workers wait for the write lock instead of failing.
    """
    import sqlite3

    from sqlalchemy import event

    path = Path(url[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=60) as con:  # WAL is a property of the file: set once
        con.execute("PRAGMA journal_mode=WAL")
    con.close()
    storage = OwnedTrialStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})

    def _pragmas(dbapi_con, _record) -> None:
        dbapi_con.execute("PRAGMA synchronous=NORMAL")

    event.listen(storage.engine, "connect", _pragmas)
    storage.engine.dispose()  # connections opened before the listener reconnect with it
    return storage


def _start_ticks(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return "?"


_WORKER_IDS: dict[int, str] = {}
_WAIT_POLL_S = 1.0  # how often a worker waiting for the last trials looks at the study again


def worker_id() -> str:
    """host:pid:start-ticks of this process (the start time tells a reused pid from the original)."""
    pid = os.getpid()
    if pid not in _WORKER_IDS:
        _WORKER_IDS[pid] = f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"
    return _WORKER_IDS[pid]


def _alive_here(worker: str) -> bool | None:
    """True/False for a worker of this machine, None for one of another machine."""
    try:
        host, pid, ticks = worker.rsplit(":", 2)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    pid_i = int(pid)
    try:
        os.kill(pid_i, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return ticks == "?" or _start_ticks(pid_i) == ticks


def fail_dead_trials(study: optuna.Study, stale_after_s: float) -> list[int]:
    """Mark RUNNING trials whose worker is dead as FAIL; returns their numbers.

    Called by a worker between its trials, so a RUNNING trial that names this very worker is one
    it no longer runs (it lost a WAITING trial's race and the winner died before re-stamping it).
    """
    failed = []
    now = time.time()
    me = worker_id()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(t.user_attrs.get(WORKER_ATTR, ""))
        alive = False if owner == me else _alive_here(owner)
        if alive is None:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            alive = now - started < stale_after_s
        if not alive:
            try:
                study.tell(t.number, state=TrialState.FAIL)
                failed.append(t.number)
            except ValueError:  # finished meanwhile
                pass
    return failed


def local_workers(study: optuna.Study, running: list[FrozenTrial] | None = None) -> int:
    """Live workers of this study on this machine, this one included (owners of RUNNING trials;
    `running`: those trials when the caller has just read them)."""
    if running is None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    owners = {str(t.user_attrs.get(WORKER_ATTR, "")) for t in running}
    return 1 + sum(1 for w in owners - {worker_id()} if _alive_here(w))


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _live_before(study: optuna.Study, number: int) -> int:
    """Completed or running trials numbered below `number` (what a new trial queues behind)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
               if t.number < number)


class Infeasible(Exception):
    """Parameters that describe no arch of the space (recorded as a PRUNED trial)."""


def run_trials(study: optuna.Study, n_trials: int, objective: Callable[[optuna.Trial], list[float]],
               *, stale_after_s: float = 3600.0, progress: bool = True,
               on_local_workers: Callable[[int], None] | None = None) -> int:
    """Run trials until the study holds `n_trials` completed ones; returns how many this worker ran.

    `objective(trial)` returns the objective values (and may `trial.set_constraint`); raising
    `Infeasible` records the trial as PRUNED with the reason, which does not count as completed.
    `on_local_workers(n)` is told, before each trial, how many live workers of this study run on
    this machine (this one included), so the caller can share the cores among them.
    """
    me = worker_id()
    done = len(completed(study))
    bar = _progress(progress, n_trials, done)
    ran = 0
    try:
        while True:
            fail_dead_trials(study, stale_after_s)
            done = len(completed(study))
            bar_update(bar, done)
            if done >= n_trials:
                break
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if done + len(running) >= n_trials:  # the last trials run elsewhere: wait for them, or their slots
                _waiting(bar, len(running))
                time.sleep(_WAIT_POLL_S)
                continue
            if on_local_workers is not None:
                on_local_workers(local_workers(study, running))
            trial = study.ask()
            if trial.user_attrs.get(WORKER_ATTR) != me:  # a popped trial whose race another worker stamped
                trial.set_user_attr(WORKER_ATTR, me)
            if _live_before(study, trial.number) >= n_trials:  # another worker took the last slot
                trial.set_user_attr(DROPPED_ATTR, "over n_trials")
                study.tell(trial, state=TrialState.FAIL)
                continue
            try:
                values = objective(trial)
            except Infeasible as e:
                trial.set_user_attr(INFEASIBLE_ATTR, str(e))
                study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                continue
            except BaseException:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
            # skip_if_finished: another worker judged this one dead (see fail_dead_trials) and has
            # refilled its slot; the result is dropped, the count stays exact
            if study.tell(trial, values, skip_if_finished=True).state == TrialState.COMPLETE:
                ran += 1
        bar_update(bar, len(completed(study)))
    finally:
        if bar is not None:
            bar.close()
    return ran


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=min(initial, total), desc="trials", unit="trial", dynamic_ncols=True)


def _waiting(bar, running: int) -> None:
    if bar is not None:
        bar.set_postfix_str(f"waiting for {running} running elsewhere", refresh=True)


def bar_update(bar, done: int) -> None:
    if bar is not None and done > bar.n:
        bar.update(min(done, bar.total) - bar.n)
