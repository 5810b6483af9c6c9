"""Search workers sharing one study through a real server: Optuna's gRPC storage proxy
(`python -m hwnas.search.server`, in front of SQLite) and PostgreSQL, each a real server process on
loopback, with three real worker processes. One worker is SIGKILLed inside a trial and the server
is restarted mid-run: the study must still end with exactly `n_trials` completed trials, none
running, none lost or counted twice.

PostgreSQL comes from Debian's packages (`.ci/run` installs them where they are missing); outside
CI, a machine without them skips the PostgreSQL cases.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hwnas.search import study as study_mod

pytest.importorskip("grpc", reason="the gRPC storage proxy needs grpcio (pip install -e '.[test]')")

N_TRIALS = 60
HANG_AFTER = 6  # worker 0 hangs inside its 7th evaluation, where the test kills it

# A search worker as `python -m hwnas.search` runs it (hwnas.search.app.run on the composed config),
# with an evaluator that takes 0.2 s per arch (so the run lasts long enough to restart the server in
# it) and, for worker 0, hangs inside an evaluation (so its SIGKILL lands mid-trial for certain).
WORKER = r'''
import os, sys, time
from pathlib import Path
from hwnas.search.app import AccuracySource, compose_config, run
from hwnas.search.objectives import ProxyEvaluator

class SlowProxy(ProxyEvaluator):
    def __init__(self, hang_after, marker):
        super().__init__()
        self.hang_after, self.marker = hang_after, marker

    def evaluate(self, arch):
        if self.hang_after and self.calls >= self.hang_after:
            self.marker.write_text(str(os.getpid()))
            time.sleep(3600)
        time.sleep(0.2)
        return super().evaluate(arch)

run_dir, hang_after = Path(sys.argv[1]), int(sys.argv[2])
cfg = compose_config(sys.argv[3:])
run(cfg, run_dir, accuracy=AccuracySource(SlowProxy(hang_after, run_dir / "hung"), "slow proxy", None, "proxy"))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class GrpcProxy:
    """`python -m hwnas.search.server` in front of an SQLite file, on a loopback port."""

    kind = "grpc"

    def __init__(self, root: Path):
        self.db = f"sqlite:///{root / 'proxied.db'}"
        self.port = free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"
        self.reader = self.db  # the test reads the study from the database itself (also while the proxy is down)
        self.log = root / "server.log"
        self.proc = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "hwnas.search.server", "--storage", self.db,
                                          "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=self.port)
        try:
            proxy.wait_server_ready(timeout=120)
        finally:
            proxy.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).resolve().parent if which else None


class Postgres:
    """A PostgreSQL server of Debian's packages in a temporary data directory, on a loopback port."""

    kind = "postgresql"

    def __init__(self, bindir: Path):
        self.bin = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="hwnas-pg-"))  # not under pytest's root-only tmp dir
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.reader = self.url
        self.as_user = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as Debian's postgres user
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*self.as_user, str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "--no-sync"], check=True, capture_output=True, timeout=120)

    def _ctl(self, *args) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        self._ctl("-w", "-l", str(self.dir / "server.log"), "-o",
                  f"-p {self.port} -k {self.dir} -h 127.0.0.1 -c fsync=off", "start")

    def kill(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop")  # no clean shutdown: connections die mid-transaction

    def stop(self) -> None:
        try:
            self._ctl("-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=["grpc", "postgresql"])
def server(request, tmp_path):
    if request.param == "grpc":
        srv = GrpcProxy(tmp_path)
    else:
        pytest.importorskip("psycopg", reason="PostgreSQL needs psycopg (pip install -e '.[test]')")
        bindir = _postgres_bin()
        if bindir is None:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql package")
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        srv = Postgres(bindir)
    srv.start()
    yield srv
    srv.stop()


def _states(reader: str) -> tuple[Counter, list]:
    study = optuna.load_study(study_name="shared", storage=reader)
    trials = study.get_trials(deepcopy=False)
    return Counter(t.state.name for t in trials), trials


def _completed(reader: str) -> int:
    try:
        return _states(reader)[0]["COMPLETE"]
    except KeyError:  # the study does not exist yet
        return 0


def test_workers_share_one_study_through_a_server_a_kill_and_a_restart(server, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    common = ["+target=onnxruntime_cpu", "evaluator=proxy", "progress=false", "search=random",
              "search.seed_archs=[min,references]", f"search.n_trials={N_TRIALS}", f"storage={server.url}",
              "study_name=shared", "storage_retry_s=180"]
    logs = [open(tmp_path / f"w{i}.log", "w") for i in range(3)]
    workers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"w{i}"), str(HANG_AFTER if i == 0 else 0),
                                 *common, f"seed={i}"], stdout=logs[i], stderr=subprocess.STDOUT)
               for i in range(3)]
    try:
        # 1. worker 0 hangs inside a trial: SIGKILL it there
        wait_for(lambda: (tmp_path / "w0" / "hung").exists() or workers[0].poll() is not None, 300,
                 "worker 0 to reach its hanging evaluation")
        assert workers[0].poll() is None, (tmp_path / "w0.log").read_text()[-3000:]
        _, trials = _states(server.reader)
        owner = lambda t: t.user_attrs.get(study_mod.WORKER_ATTR, "").split(":")[1]  # noqa: E731
        (killed_trial,) = [t for t in trials if t.state == TrialState.RUNNING and owner(t) == str(workers[0].pid)]
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=30)

        # 2. restart the server while the two others run (a restarted proxy's cache starts empty under
        # their RUNNING trials: test_a_restarted_proxy_serves_the_trials_running_through_it isolates that)
        before = _completed(server.reader)
        wait_for(lambda: _completed(server.reader) >= before + 5, 300, "trials after the kill")
        at_restart = _completed(server.reader)
        assert at_restart < N_TRIALS - 10, "the workers finished before the server could be restarted"
        server.kill()
        time.sleep(3)  # the workers' calls fail meanwhile: they retry
        server.start()

        # 3. the others finish the study
        rcs = [w.wait(timeout=400) for w in workers[1:]]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        for f in logs:
            f.close()
    out = [(tmp_path / f"w{i}.log").read_text() for i in (1, 2)]
    assert rcs == [0, 0], "\n".join(o[-3000:] for o in out)
    assert any("retrying" in o for o in out)  # they did meet the server down
    states, trials = _states(server.reader)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == N_TRIALS and states["RUNNING"] == 0, states
    assert len({t.number for t in done}) == N_TRIALS
    assert next(t for t in trials if t.number == killed_trial.number).state == TrialState.FAIL
    by_worker = Counter(owner(t) for t in done)
    # worker 0 made HANG_AFTER evaluations before it hung; fewer of the COMPLETE trials may name it:
    # an enqueued seed trial two workers popped at once is finished (and owned) by the other one
    assert set(by_worker) <= {str(w.pid) for w in workers} and by_worker[str(workers[0].pid)] >= 1
    assert all(by_worker[str(w.pid)] > 0 for w in workers[1:])
    assert all("report:" in o for o in out)


def test_a_restarted_proxy_serves_the_trials_running_through_it(tmp_path):
    """Optuna's cache in the proxy (`_CachedStorage`) finds a trial's study for `set_trial_param` only
    among the trials it created or read; a restarted proxy starts with an empty cache, under trials
    the workers are still running. Their next `suggest` was answered NOT_FOUND (a KeyError in the
    worker), which stopped the worker: the gRPC defect of issue 14. `ProxiedStorage` reads the study
    then, and still answers NOT_FOUND for a trial the database does not hold."""
    proxy = GrpcProxy(tmp_path)
    proxy.start()
    try:
        storage = study_mod.make_storage(proxy.url, retry_s=60)
        study = optuna.create_study(storage=storage, study_name="restart", directions=["minimize"])
        trial = study.ask()
        a = trial.suggest_int("a", 0, 9)
        proxy.kill()
        proxy.start()
        b = trial.suggest_categorical("b", ["x", "y"])  # a trial the restarted proxy has not seen
        with pytest.raises(KeyError):
            storage.set_trial_param(10**6, "a", 0.0, optuna.distributions.IntDistribution(0, 9))
        study.tell(trial, 1.0)
    finally:
        proxy.stop()
    (done,) = optuna.load_study(study_name="restart", storage=proxy.reader).get_trials()
    assert done.state == TrialState.COMPLETE and done.params == {"a": a, "b": b}


def test_a_fresh_trial_names_its_worker_through_the_server(server):
    """The ownership override (OwnedTrialStorage.create_new_trial / set_trial_state_values, Optuna's
    public storage interface) holds through the gRPC proxy and PostgreSQL (SQLite:
    tests/test_search_cli.py)."""
    study = study_mod.open_study(server.url, "own", ["minimize"], optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    assert trial.user_attrs[study_mod.WORKER_ATTR] == study_mod.worker_id()
    study.enqueue_trial({"x": 0.5})
    popped = study.ask()  # WAITING -> RUNNING
    assert popped.number == trial.number + 1
    assert popped.user_attrs[study_mod.WORKER_ATTR] == study_mod.worker_id()
    # between its trials, a worker fails the RUNNING trials that name it (it no longer runs them)
    assert study_mod.fail_dead_trials(study, stale_after_s=3600) == [trial.number, popped.number]


def test_an_unreachable_server_stops_the_worker_clearly(tmp_path):
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "hwnas.search", "+target=onnxruntime_cpu", "evaluator=proxy",
                        "progress=false", f"hydra.run.dir={tmp_path}", f"storage=grpc://127.0.0.1:{port}",
                        "storage_retry_s=2"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"storage=grpc://127.0.0.1:{port}: the server has not answered for 2 s" in r.stderr
    assert "Traceback" not in r.stderr


# ---- issue 24: a full disk is a full disk; a server that never answered fails fast --------------------
def test_a_full_database_is_named_a_full_disk_at_once(tmp_path):
    """SQLite's own "database or disk is full" (here: its page limit, as a full disk gives it) under a
    running study was taken for an unreachable server and retried for storage_retry_s."""
    from sqlalchemy import event
    study = study_mod.open_study(study_mod.default_storage(tmp_path), "s", ["maximize"],
                                 optuna.samplers.RandomSampler(seed=0), retry_s=60)
    rdb = study._storage.backend._backend
    pages = rdb.engine.connect().exec_driver_sql("PRAGMA page_count").scalar()
    event.listen(rdb.engine, "connect", lambda con, _r: con.execute(f"PRAGMA max_page_count={pages}"))
    rdb.engine.dispose()
    with pytest.raises(study_mod.StorageFull, match="the disk holding the study is full .*database or disk is "
                                                    "full.*free some space"):
        for i in range(200):
            study.set_user_attr(f"k{i}", "x" * 4000)


def test_a_study_on_a_folder_or_a_full_disk_at_start_is_one_line(tmp_path):
    with pytest.raises(study_mod.ConfigError, match="is a folder; name the study's database file in it"):
        study_mod.open_study(f"sqlite:///{tmp_path}", "s", ["maximize"], optuna.samplers.RandomSampler(seed=0))
    e = OSError(28, "No space left on device", str(tmp_path / "study.db"))
    assert study_mod.full_disk(e) == "No space left on device"
    err = study_mod.storage_full_error(f"sqlite:///{tmp_path / 'study.db'}", "No space left on device")
    assert "free some space on the disk of" in str(err) and "unreachable" not in str(err)


def test_a_database_server_that_never_answered_fails_fast_naming_its_address(tmp_path):
    """Not the whole storage_retry_s (600 s by default): a server that never answered this worker is a
    wrong address or one not started; the line names HOST:PORT (never the password)."""
    pytest.importorskip("psycopg")
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "hwnas.search", "+target=onnxruntime_cpu", "evaluator=proxy",
                        "progress=false", f"hydra.run.dir={tmp_path}",
                        f"storage=postgresql://hwnas:secret@127.0.0.1:{port}/db"],
                       capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("hwnas.search: error: ")]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert f"it never answered at 127.0.0.1:{port}" in lines[0] and "Traceback" not in r.stderr
    assert "secret" not in r.stderr and "postgresql://hwnas:***@" in lines[0]
    assert f"has not answered for {study_mod.NEVER_ANSWERED_S:g} s" in lines[0]
