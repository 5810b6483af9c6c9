"""`python -m hwnas.search +target=T [space=S] [search=nsga2|tpe|mes_greedy|random] [key=value ...]`.

See docs/search.md. Settings and their meaning: hwnas/conf/search.yaml and its groups.
"""
from __future__ import annotations


def main() -> None:
    from hwnas.cli import run_app
    from hwnas.search.app import run
    from hwnas.search.config import register
    run_app("search", "search", run, register=register)


if __name__ == "__main__":
    main()
