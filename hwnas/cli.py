"""How the four apps start and fail: one runner for `python -m hwnas.{profile,train,search,extract}`.

    run_app("train", "train", task, register=register)    # task(cfg, run_dir)

Hydra composes `hwnas/conf/<config>.yaml` with the command line and makes the run directory; the
task runs in it. A `HwnasError` -- bad input, whose message names the problem and the fix -- is
printed as one line, `hwnas.<app>: error: <message>`, and the app exits with status 2
(`USER_ERROR_EXIT`). Anything else is a bug and keeps its traceback (exit status 1). Hydra's own
errors (an unknown key or config group) are Hydra's: one message, exit status 1.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from hwnas.config import CONF_DIR
from hwnas.errors import HwnasError

USER_ERROR_EXIT = 2


def report_user_error(app: str, error: BaseException) -> None:
    """Print `error` the way every app reports bad input: one line on stderr."""
    print(f"hwnas.{app}: error: {error}", file=sys.stderr)


def run_app(app: str, config_name: str, task: Callable[[Any, Path], Any],
            register: Callable[[], None] | None = None) -> None:
    """Run `task(cfg, run_dir)` as the Hydra app `hwnas.<app>` on `conf/<config_name>.yaml`.

    `register` stores the app's typed schemas in Hydra's ConfigStore first (so a misspelt key fails
    at start-up, by name).
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig

    if register is not None:
        register()

    def main(cfg) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            task(cfg, run_dir)
        except HwnasError as e:
            report_user_error(app, e)
            sys.exit(USER_ERROR_EXIT)

    # Hydra names the job (and its log file) after the module that defines the task function.
    main.__module__ = f"hwnas.{app}"
    main.__qualname__ = main.__name__ = app
    hydra.main(version_base=None, config_path=str(CONF_DIR), config_name=config_name)(main)()
