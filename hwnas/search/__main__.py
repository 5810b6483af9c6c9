"""`python -m hwnas.search +target=T [space=S] [search=nsga2|tpe|mes_greedy|random] [key=value ...]`.

See docs/search.md. Settings and their meaning: hwnas/conf/search.yaml and its groups.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hwnas.search.config import register

register()


@hydra.main(config_path="../conf", config_name="search", version_base=None)
def main(cfg: DictConfig) -> None:
    from hwnas.search.app import run, user_errors
    try:
        run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
