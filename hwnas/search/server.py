"""`python -m hwnas.search.server --storage DB_URL --port 13000`: Optuna's gRPC storage proxy in front of a
database, for search workers on other machines (`storage=grpc://THIS_HOST:13000`).

The workers then need no database driver and no database credentials, only the proxy's address; the
proxy keeps one connection pool and Optuna's in-process cache for all of them. `DB_URL` is any URL
Optuna's RDBStorage takes: `sqlite:///FILE` (the proxy is then the only process that opens the file,
which is what makes SQLite safe for workers on several machines) or `postgresql://USER:PASSWORD@HOST/DB`.
A restart of the proxy is survived by the workers (they retry for `storage_retry_s`); trials they
were running stay theirs.

The proxy speaks plain (insecure) gRPC: bind it to a private network or a loopback address behind
an SSH tunnel, never to the open internet. See docs/search.md, "Workers on several machines".
"""
from __future__ import annotations

import argparse
import sys
import warnings

from hwnas.cli import report_user_error
from hwnas.errors import HwnasError


def serve(storage: str, host: str = "127.0.0.1", port: int = 13000, threads: int = 16) -> None:
    """Run the proxy for `storage` on host:port until the process is stopped."""
    from concurrent.futures import ThreadPoolExecutor

    import optuna

    from .study import _require, rdb_storage, sqlite_storage
    _require("grpc", "grpcio", f"grpc://{host}:{port}")
    if storage.startswith("grpc:"):
        raise HwnasError(f"--storage {storage}: the proxy serves a database (sqlite:///FILE or "
                         "postgresql://...), not another proxy")
    backend = sqlite_storage(storage) if storage.startswith("sqlite:///") else rdb_storage(storage)
    with warnings.catch_warnings():  # experimental since Optuna 4.2; the tested range is pinned
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        from optuna.storages import run_grpc_proxy_server
        print(f"hwnas.search.server: serving {_safe(storage)} on grpc://{host}:{port}", flush=True)
        run_grpc_proxy_server(backend, host=host, port=port, thread_pool=ThreadPoolExecutor(threads))


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


if __name__ == "__main__":
    main()
