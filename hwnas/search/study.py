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

The study lives in SQLite (one machine), or in a server that workers on several machines share:
PostgreSQL (or another database SQLAlchemy reaches, `postgresql://...`), or Optuna's gRPC storage
proxy in front of one (`grpc://host:port`, started with `python -m hwnas.search.server`). A worker
retries a server it cannot reach for `retry_s` (a restart of the server or of its database is
survived), then stops with `StorageUnavailable`.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from hwnas.errors import ConfigError, HwnasError

DEFAULT_RETRY_S = 600.0  # how long a worker waits for an unreachable storage server
WORKER_ATTR = "worker"  # user attr: host:pid:start-ticks of the process that runs the trial
DROPPED_ATTR = "dropped"  # why a trial was told FAIL without being evaluated
INFEASIBLE_ATTR = "infeasible"  # the ArchError of parameters no repair could make valid


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"


class StorageUnavailable(HwnasError, ConnectionError):
    """The study's storage server did not answer within the retry window."""


class StorageFull(HwnasError):
    """The disk under the study is full (SQLite's "database or disk is full", ENOSPC, PostgreSQL's
    disk-full state): no retry helps, so it is said at once, as a full disk."""


#: a storage server that has never answered this process is given this long (not `storage_retry_s`,
#: which is for a server that answered and is restarting): a wrong address fails fast
NEVER_ANSWERED_S = 10.0


def address(url: str) -> str:
    """HOST:PORT of a storage URL (no user or password), or the file of an SQLite one."""
    from urllib.parse import urlsplit
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url.split("@")[-1]
    return f"{parts.hostname or 'localhost'}{f':{port}' if port else ''}"


def shown(url: str) -> str:
    """`url` as messages show it: a password replaced by ***."""
    import re
    return re.sub(r"^([a-z0-9+]+://[^:/@]+):[^@/]*@", r"\1:***@", url)


def full_disk(e: BaseException) -> str | None:
    """The full-disk message hidden in `e` (or its causes), else None."""
    import errno
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e.strerror or str(e)
        text = str(e).lower()
        orig = getattr(e, "orig", None)
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if "database or disk is full" in text or "no space left on device" in text or code == "53100" \
                or "disk quota exceeded" in text:
            return str(orig or e).splitlines()[0]
        e = e.__cause__ or e.__context__
    return None


def storage_full_error(url: str, why: str) -> StorageFull:
    where = address(url)
    return StorageFull(f"storage={shown(url)}: the disk holding the study is full ({why}); free some space on the disk "
                       f"of {where}{'' if url.startswith('sqlite:///') else ' (the database server)'}, then rerun "
                       "the same command: the study resumes with every finished trial")


def open_study(storage: str, study_name: str, directions: list[str],
               sampler: optuna.samplers.BaseSampler, retry_s: float = DEFAULT_RETRY_S) -> optuna.Study:
    """Create the study, or load it (same storage and name): that is what resuming is.

    `storage`: `sqlite:///FILE`, a database URL (`postgresql://user:password@host/db`), or
    `grpc://host:port` (Optuna's gRPC storage proxy). Workers that start together on a fresh database
    race to create Optuna's tables (an IntegrityError in one of them): on SQLite a file lock
    serialises the creation; on other databases the loser retries.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
    for attempt in range(6):
        try:
            with _init_lock(storage):
                study = optuna.create_study(storage=make_storage(storage, retry_s), study_name=study_name,
                                            directions=directions, sampler=sampler, load_if_exists=True)
            break
        except (IntegrityError, OperationalError, ProgrammingError) as e:
            why = full_disk(e)
            if why:
                raise storage_full_error(storage, why) from None
            if attempt == 5:
                raise
            time.sleep(0.5 * (attempt + 1))
        except HwnasError:
            raise
        except Exception as e:
            why = full_disk(e)
            if why:
                raise storage_full_error(storage, why) from None
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


def parse_grpc_url(url: str) -> tuple[str, int]:
    """`grpc://host:port` -> (host, port)."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "grpc" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ConfigError(f"storage={url}: a gRPC storage proxy is named grpc://HOST:PORT (start one with "
                          "`python -m hwnas.search.server --storage DB_URL --port PORT`)")
    return parts.hostname, port


def make_storage(url: str, retry_s: float = DEFAULT_RETRY_S) -> "OwnedTrialStorage":
    """The Optuna storage a URL names, with worker ownership and retries (`OwnedTrialStorage`)."""
    if url.startswith("sqlite:///"):
        return OwnedTrialStorage(sqlite_storage(url), url, retry_s)
    if url.startswith("grpc:"):
        host, port = parse_grpc_url(url)
        _require("grpc", "grpcio", url)

        def connect() -> optuna.storages.BaseStorage:
            with warnings.catch_warnings():  # experimental since Optuna 4.2; the tested range is pinned
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.GrpcStorageProxy(host=host, port=port)
        # a fresh channel on every retry: gRPC's own reconnection backs off up to 2 minutes, which
        # would keep workers idle long after a restarted proxy is back
        return OwnedTrialStorage(connect(), url, retry_s, reconnect=connect)
    if "://" not in url:
        raise ConfigError(f"storage={url}: give a storage URL: sqlite:///FILE, postgresql://USER:PASSWORD@HOST/DB "
                          "or grpc://HOST:PORT")
    return OwnedTrialStorage(_retrying(lambda: rdb_storage(url), url, retry_s, answered=False), url, retry_s)


def rdb_storage(url: str) -> optuna.storages.BaseStorage:
    """A database URL's storage: an RDBStorage behind Optuna's in-process cache (`get_storage`, what
    Optuna's own docs use in front of a server)."""
    try:
        return optuna.storages.get_storage(url)
    except ImportError as e:
        cause = e.__cause__ or e
        raise ConfigError(f"storage={url}: no database driver for this URL ({cause}); for postgresql:// "
                          "pip install 'psycopg[binary]' (or pip install 'hwnas[server]')") from None


def _require(module: str, package: str, url: str) -> None:
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"storage={url} needs the Python package {package}: pip install {package} "
                          "(or pip install 'hwnas[server]')")


def _transient(e: BaseException) -> bool:
    """An error a storage server that is down or restarting gives (worth retrying)."""
    from sqlalchemy.exc import InterfaceError, OperationalError
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (OperationalError, InterfaceError)):
            return True
        if type(e).__module__.startswith("grpc") and hasattr(e, "code"):
            import grpc
            return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        e = e.__cause__ or e.__context__
    return False


def held_from_ctrl_c(fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs) with a Ctrl-C held until it returns, then raised (KeyboardInterrupt). A Ctrl-C
    that lands inside a storage call stops SQLAlchemy mid-commit: the search then died of an
    AssertionError in SQLAlchemy's commit instead of ending with its one line, or hung on the
    half-closed transaction (both seen in CI, 2026-12-07). One storage call is short; a second Ctrl-C
    while it runs (a call hung on a network) raises at once. Only in the main thread, and only where
    Python's own Ctrl-C handler is installed (an ignored SIGINT stays ignored)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        return fn(*args, **kwargs)
    pressed = []

    def hold(signum, frame):
        pressed.append(signum)
        if len(pressed) > 1:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, hold)
    try:
        out = fn(*args, **kwargs)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt
    return out


def _retrying(fn: Callable, url: str, retry_s: float, on_retry: Callable[[], None] | None = None,
              answered: bool = True):
    """fn(), retried while the storage server is unreachable, for at most `retry_s` seconds (at most
    `NEVER_ANSWERED_S` for a server that has never answered: `answered` False). A full disk is no
    outage: said at once (`StorageFull`)."""
    first = None
    delay = 0.2
    limit = retry_s if answered else min(retry_s, NEVER_ANSWERED_S)
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 -- only transient errors are retried; the rest re-raised
            why = full_disk(e)
            if why:
                raise storage_full_error(url, why) from None
            if not _transient(e):
                raise
            now = time.monotonic()
            first = first if first is not None else now
            if now - first >= limit:
                never = "" if answered else f" (it never answered at {address(url)}: is it started, at that address?)"
                raise StorageUnavailable(
                    f"storage={shown(url)}: the server has not answered for {limit:g} s{never} ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else ''}); start it (or check the address), then "
                    "rerun the same command: the study resumes. storage_retry_s= sets how long workers wait") from e
            if first == now:
                print(f"storage {shown(url)} unreachable ({type(e).__name__}); retrying for up to {retry_s:g} s",
                      file=sys.stderr, flush=True)
            if on_retry is not None:
                on_retry()
            time.sleep(delay)
            delay = min(delay * 1.6, 5.0)


def _delegate(name: str):
    def method(self, *args, **kwargs):
        return self._call(name, *args, **kwargs)
    method.__name__ = name
    method.__doc__ = f"`{name}` of the wrapped storage (through `_call`)."
    return method


class DelegatingStorage(optuna.storages.BaseStorage):
    """A storage that passes every call of Optuna's public storage interface on to `backend`,
    through `_call` (a plain call here; a subclass retries it, or repairs one method)."""

    def __init__(self, backend: optuna.storages.BaseStorage):
        self.backend = backend

    def _call(self, name: str, *args, **kwargs):
        return held_from_ctrl_c(getattr(self.backend, name), *args, **kwargs)

    def remove_session(self) -> None:
        self.backend.remove_session()

    create_new_study = _delegate("create_new_study")
    delete_study = _delegate("delete_study")
    set_study_user_attr = _delegate("set_study_user_attr")
    set_study_system_attr = _delegate("set_study_system_attr")
    get_study_id_from_name = _delegate("get_study_id_from_name")
    get_study_name_from_id = _delegate("get_study_name_from_id")
    get_study_directions = _delegate("get_study_directions")
    get_study_user_attrs = _delegate("get_study_user_attrs")
    get_study_system_attrs = _delegate("get_study_system_attrs")
    get_all_studies = _delegate("get_all_studies")
    create_new_trial = _delegate("create_new_trial")
    set_trial_param = _delegate("set_trial_param")
    get_trial_id_from_study_id_trial_number = _delegate("get_trial_id_from_study_id_trial_number")
    get_trial_number_from_id = _delegate("get_trial_number_from_id")
    get_trial_param = _delegate("get_trial_param")
    set_trial_state_values = _delegate("set_trial_state_values")
    set_trial_intermediate_value = _delegate("set_trial_intermediate_value")
    set_trial_user_attr = _delegate("set_trial_user_attr")
    set_trial_system_attr = _delegate("set_trial_system_attr")
    get_trial = _delegate("get_trial")
    get_all_trials = _delegate("get_all_trials")
    get_n_trials = _delegate("get_n_trials")
    get_best_trial = _delegate("get_best_trial")
    get_trial_params = _delegate("get_trial_params")
    get_trial_user_attrs = _delegate("get_trial_user_attrs")
    get_trial_system_attrs = _delegate("get_trial_system_attrs")
    check_trial_is_updatable = _delegate("check_trial_is_updatable")


def name_metrics(study: optuna.Study, objectives: list[str]) -> None:
    """Name the study's objectives (Optuna's metric names: what optuna-dashboard labels its axes with)."""
    if study.metric_names != list(objectives):
        with warnings.catch_warnings():  # experimental since Optuna 3.2, unchanged through the tested range
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(objectives))


@contextlib.contextmanager
def _init_lock(storage: str):
    if not storage.startswith("sqlite:///"):
        yield
        return
    import fcntl
    folder = Path(storage[len("sqlite:///"):]).parent
    folder.mkdir(parents=True, exist_ok=True)
    stale = Path(storage[len("sqlite:///"):] + ".lock")  # the lock file of an hwnas before: no longer used
    # the lock is the study's folder itself (flock on a directory): no lock file is left beside the study
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class OwnedTrialStorage(DelegatingStorage):
    """Any Optuna storage (SQLite, PostgreSQL, the gRPC proxy), whose trials carry their worker's id
    (user attr `worker`) from the commit that makes them RUNNING, and whose calls are retried while
    the storage server is unreachable -- through Optuna's public storage interface only.

    A new trial is created from a template (RUNNING, with the attr: the public `create_new_trial`
    argument Optuna itself uses for `add_trial`), so it has its owner in the transaction that creates
    it, on the database or on the gRPC server. A WAITING trial (an enqueued seed arch) gets the attr
    just before the WAITING->RUNNING transition; if another worker wins that race it runs the trial
    and re-stamps it with its own id (`run_trials` does, right after `ask`). On SQLite (also behind
    the gRPC proxy) both can win it: the first to finish the trial stands, the other drops its run.

    A call retried after a lost connection may have been applied: a trial created twice leaves one
    RUNNING trial that this worker does not run, which `fail_dead_trials` fails (it names this very
    worker); a finish applied before the connection broke is recognised, not reported as a conflict.
    `tests/test_search_storage.py` checks a fresh trial's owner through SQLite, PostgreSQL and the
    gRPC proxy, so a change in Optuna that bypasses `create_new_trial` fails a test.
    """

    def __init__(self, backend: optuna.storages.BaseStorage, url: str, retry_s: float = DEFAULT_RETRY_S,
                 reconnect: Callable[[], optuna.storages.BaseStorage] | None = None):
        super().__init__(backend)
        self.url = url
        self.retry_s = float(retry_s)
        self._reconnect = reconnect  # a fresh client for the same server (gRPC), used between retries
        self.answered = not url.startswith("grpc:")  # a database URL answered when its storage was made

    def _new_backend(self) -> None:
        if self._reconnect is not None:
            old, self.backend = self.backend, self._reconnect()
            with contextlib.suppress(Exception):
                old.close()

    def _call(self, name: str, *args, **kwargs):
        out = _retrying(lambda: held_from_ctrl_c(getattr(self.backend, name), *args, **kwargs), self.url,
                        self.retry_s, self._new_backend, answered=self.answered)
        self.answered = True
        return out

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            template_trial = optuna.trial.create_trial(state=TrialState.RUNNING,
                                                       user_attrs={WORKER_ATTR: worker_id()})
        return self._call("create_new_trial", study_id, template_trial)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        if state == TrialState.RUNNING:
            self._call("set_trial_user_attr", trial_id, WORKER_ATTR, worker_id())
        attempts = []

        def once() -> bool:
            attempts.append(1)
            try:
                return held_from_ctrl_c(self.backend.set_trial_state_values, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if len(attempts) > 1 and state.is_finished() and self._applied(trial_id, state, values):
                    return True  # the earlier attempt went through before its connection broke
                raise
        out = _retrying(once, self.url, self.retry_s, self._new_backend, answered=self.answered)
        self.answered = True
        return out

    def _applied(self, trial_id: int, state: TrialState, values) -> bool:
        # read past Optuna's in-process cache (get_storage's _CachedStorage): the attempt that went
        # through raised before the cache learnt of it, so the cache still says RUNNING
        backend = getattr(self.backend, "_backend", self.backend)
        t = _retrying(lambda: held_from_ctrl_c(backend.get_trial, trial_id), self.url, self.retry_s)
        return t.state == state and (values is None or list(t.values or []) == [float(v) for v in values])

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return self._call("get_all_trials", study_id, deepcopy=deepcopy, states=states)


def sqlite_storage(url: str) -> optuna.storages.BaseStorage:
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
    if path.is_dir():
        raise ConfigError(f"storage={url}: {path} is a folder; name the study's database file in it, "
                          f"e.g. storage=sqlite:///{path / 'study.db'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with sqlite3.connect(path, timeout=60) as con:  # WAL is a property of the file: set once
            con.execute("PRAGMA journal_mode=WAL")
        con.close()
    except sqlite3.Error as e:
        why = full_disk(e)
        if why:
            raise storage_full_error(url, why) from None
        if isinstance(e, sqlite3.OperationalError) and "unable to open" in str(e):
            raise ConfigError(f"storage={url}: cannot open {path} as a database ({e}); name a file in a folder "
                              "you can write") from None
        raise
    rdb = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})

    def _pragmas(dbapi_con, _record) -> None:
        dbapi_con.execute("PRAGMA synchronous=NORMAL")

    event.listen(rdb.engine, "connect", _pragmas)
    rdb.engine.dispose()  # connections opened before the listener reconnect with it
    return optuna.storages.get_storage(rdb)  # behind Optuna's in-process cache, as create_study would put it


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


# What `study.tell` raises for a trial another worker has finished: ValueError where tell's own check
# sees it finished; UpdateFinishedTrialError where it is finished between that check and tell's write
# (two workers failing one dead trial at once: each read it RUNNING)
_FINISHED_ELSEWHERE = (ValueError, optuna.exceptions.UpdateFinishedTrialError)


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
            except _FINISHED_ELSEWHERE:  # another worker failed it first
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


class NonFiniteObjective(HwnasError, ValueError):
    """A trial whose objective values are not all finite numbers."""


class NothingToScore(HwnasError, ValueError):
    """Trial after trial describes no arch the search can score (all pruned as `Infeasible`)."""


#: pruned trials in a row (none completed between them) after which a worker stops: a search whose
#: table lacks the rows of nearly every arch would otherwise ask for archs forever
def pruned_limit(n_trials: int) -> int:
    return max(200, 20 * n_trials)


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
    done = len(completed(study))
    bar = _progress(progress, n_trials, done)
    ran = pruned = 0  # pruned: in a row, since this worker last completed one
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
            try:
                outcome = _run_trial(study, trial, n_trials, objective)
                if outcome == "complete":
                    ran, pruned = ran + 1, 0
                elif outcome == "pruned":
                    pruned += 1
                if pruned >= pruned_limit(n_trials):
                    raise NothingToScore(
                        f"{pruned} trials in a row of study {study.study_name!r} described no arch this search can "
                        f"score, with {len(completed(study))} of {n_trials} completed (the last: "
                        f"{trial.user_attrs.get(INFEASIBLE_ATTR)}); the search "
                        "stops. A latency table that covers a few archs only is the usual cause: profile the whole "
                        "space, or search a table that does")
            except optuna.exceptions.UpdateFinishedTrialError:
                if not _finished(study, trial.number):
                    raise
                # another worker finished this trial while this one ran it: it popped the same
                # enqueued trial (on SQLite, also behind the gRPC proxy, two workers can), or judged
                # this worker dead (fail_dead_trials) and refilled its slot. Its outcome stands;
                # this run is dropped, the count stays exact
        bar_update(bar, len(completed(study)))
    finally:
        if bar is not None:
            bar.close()
    return ran


def _run_trial(study: optuna.Study, trial: optuna.Trial, n_trials: int,
               objective: Callable[[optuna.Trial], list[float]]) -> str:
    """Run one asked trial: "complete" if this worker completed it, "pruned" if it described no arch
    to score (`Infeasible`), "dropped" otherwise (another worker took its slot or finished it first).
    UpdateFinishedTrialError: another worker has finished it meanwhile (`run_trials` checks)."""
    me = worker_id()
    if trial.user_attrs.get(WORKER_ATTR) != me:  # a popped trial whose race another worker stamped
        trial.set_user_attr(WORKER_ATTR, me)
    if _live_before(study, trial.number) >= n_trials:  # another worker took the last slot
        trial.set_user_attr(DROPPED_ATTR, "over n_trials")
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return "dropped"
    try:
        values = objective(trial)
    except Infeasible as e:
        trial.set_user_attr(INFEASIBLE_ATTR, str(e))
        study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        return "pruned"
    except optuna.exceptions.UpdateFinishedTrialError:
        raise  # finished by another worker: nothing to tell
    except BaseException:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    if not all(math.isfinite(float(v)) for v in values):
        # Optuna fails such a trial, which does not count: the search would ask for another forever
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise NonFiniteObjective(f"trial {trial.number} of study {study.study_name!r}: objective values "
                                 f"{[float(v) for v in values]} are not all numbers; the search stops (an "
                                 "accuracy source or latency table gave NaN or inf: fix or replace it)")
    # skip_if_finished: another worker finished it before this tell read it (see run_trials)
    done = study.tell(trial, values, skip_if_finished=True).state == TrialState.COMPLETE
    return "complete" if done else "dropped"


def _finished(study: optuna.Study, number: int) -> bool:
    return any(t.number == number and t.state.is_finished() for t in study.get_trials(deepcopy=False))


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
