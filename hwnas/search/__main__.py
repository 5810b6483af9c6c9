"""`python -m hwnas.search +target=T [space=S] [search=nsga2|tpe|mes_greedy|random] [key=value ...]`.

See docs/search.md. Settings and their meaning: hwnas/conf/search.yaml and its groups.
"""
from __future__ import annotations


def main() -> None:
    import sys

    from hwnas.cli import USER_ERROR_EXIT, report_user_error, run_app
    from hwnas.errors import HwnasError
    from hwnas.export import loads_cxx_packages
    from hwnas.search.app import check_plus_target_list, run
    from hwnas.search.config import register
    try:  # before Hydra composes: it cannot merge two targets' schemas into one
        check_plus_target_list(sys.argv[1:])
    except HwnasError as e:
        report_user_error("search", e)
        sys.exit(USER_ERROR_EXIT)
    run_app("search", "search", run, register=register, interrupted=interrupted, preload=loads_cxx_packages)


def interrupted(cfg, run_dir) -> str:
    """Ctrl-C: every finished trial is in the study; the same command on the same folder resumes it."""
    storage = cfg.get("storage") or f"{run_dir}/study.db"
    return (f"every finished trial is kept in the study ({storage}); resume it with the same command and "
            f"hydra.run.dir={run_dir}")


if __name__ == "__main__":
    main()
