"""`python -m hwnas.search.server --storage DB_URL --port 13000`: Optuna's gRPC storage proxy in front of a
database, for search workers on other machines (`storage=grpc://THIS_HOST:13000`).

The workers then need no database driver and no database credentials, only the proxy's address; the
proxy keeps one connection pool and Optuna's in-process cache for all of them. `DB_URL` is any URL
Optuna's RDBStorage takes: `sqlite:///FILE` (the proxy is then the only process that opens the file,
which is what makes SQLite safe for workers on several machines) or `postgresql://USER:PASSWORD@HOST/DB`.
A restart of the proxy is survived by the workers (they retry for `storage_retry_s`); trials they
were running stay theirs. The proxy serves the database through Optuna's in-process cache
(`optuna.storages.get_storage`), wrapped by `ProxiedStorage` so that it also serves the trials that
cache has not seen (those created before a restart of the proxy).

The proxy speaks plain (insecure) gRPC: bind it to a private network or a loopback address behind
an SSH tunnel, never to the open internet. See docs/search.md, "Workers on several machines".
"""
from __future__ import annotations

import argparse
import sys
import warnings

import optuna

from hwnas.cli import report_user_error
from hwnas.errors import HwnasError
from hwnas.search.study import DelegatingStorage


class ProxiedStorage(DelegatingStorage):
    """The storage the proxy serves: `backend` (Optuna's cached RDB storage) through Optuna's public
    storage interface, with one repair.

    Optuna's cache (`_CachedStorage`, Optuna 5.0) finds a trial's study, for `set_trial_param`, in a
    map that only holds the trials this process created or has read: a trial it has not seen raises
    KeyError, which the proxy answers NOT_FOUND and the worker's client raises as KeyError. That is
    every RUNNING trial after a restart of the proxy (its cache starts empty, the workers' trials go
    on), so a worker stopped in the middle of its trial's `suggest`. Here such a KeyError (raised
    before anything is written) makes the cache read the trial's study, from the database, and the
    call is made once more; a trial the database does not hold stays a KeyError (NOT_FOUND), as before.
    `tests/test_search_storage.py` restarts the proxy under a RUNNING trial and fails without this.
    """

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: optuna.distributions.BaseDistribution) -> None:
        try:
            return self.backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)
        except KeyError:
            if not self._read_study_of(trial_id):
                raise  # no such trial
        self.backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def _read_study_of(self, trial_id: int) -> bool:
        """Make the backend's cache read the study that holds trial `trial_id`; False if none does."""
        try:
            number = self.backend.get_trial(trial_id).number  # read past the cache for a trial it lacks
        except KeyError:
            return False
        for study in self.backend.get_all_studies():
            study_id = self.backend.get_study_id_from_name(study.study_name)
            try:
                if self.backend.get_trial_id_from_study_id_trial_number(study_id, number) != trial_id:
                    continue
            except KeyError:
                continue
            self.backend.get_all_trials(study_id, deepcopy=False)
            return True
        return False


def serve(storage: str, host: str = "127.0.0.1", port: int = 13000, threads: int = 16) -> None:
    """Run the proxy for `storage` on host:port until the process is stopped."""
    from concurrent.futures import ThreadPoolExecutor

    from .study import _require, rdb_storage, sqlite_storage
    _require("grpc", "grpcio", f"grpc://{host}:{port}")
    if storage.startswith("grpc:"):
        raise HwnasError(f"--storage {storage}: the proxy serves a database (sqlite:///FILE or "
                         "postgresql://...), not another proxy")
    from .config import check_storage
    try:  # an unknown database kind or no URL at all: one line, as the search says it
        check_storage(storage)
    except HwnasError as e:
        msg = str(e).replace(f"storage={storage}:", f"--storage {_safe(storage)}:", 1)
        raise HwnasError(msg.replace(" (or null for sqlite in the run folder)", "")
                         .replace(", or null for sqlite in the run folder", "")) from None
    backend = sqlite_storage(storage) if storage.startswith("sqlite:///") else rdb_storage(storage)
    with warnings.catch_warnings():  # experimental since Optuna 4.2; the tested range is pinned
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        from optuna.storages import run_grpc_proxy_server
        print(f"hwnas.search.server: serving {_safe(storage)} on grpc://{host}:{port}", flush=True)
        run_grpc_proxy_server(ProxiedStorage(backend), host=host, port=port,
                              thread_pool=ThreadPoolExecutor(threads))


def _safe(url: str) -> str:
    """The URL without its password (it goes to logs)."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m hwnas.search.server", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", required=True, help="database URL: sqlite:///FILE or postgresql://USER:PASSWORD@HOST/DB")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface of a private network)")
    ap.add_argument("--port", type=int, default=13000)
    ap.add_argument("--threads", type=int, default=16, help="requests served at once")
    args = ap.parse_args(argv)
    try:
        serve(args.storage, args.host, args.port, args.threads)
    except HwnasError as e:
        report_user_error("search.server", e)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"hwnas.search.server: stopped (Ctrl-C); every trial is kept in {_safe(args.storage)}; restart "
              "it with the same command and the workers carry on", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
