"""The search: strategies (nsga2, tpe, random through Optuna; mes_greedy), Pareto fronts, reports.

    python -m hwnas.search +target=coreml          # the app (docs/search.md)
    python -m hwnas.search targets=[coreml,onnxruntime_cpu,torch_cuda]   # one search, several targets
    python -m hwnas.search.server --storage DB_URL  # Optuna's gRPC storage proxy for workers on many machines

    from hwnas.search import slimming_actions, hypervolume, non_dominated
    from hwnas.search import Strategy, register_strategy   # a strategy of your own (hwnas.search.strategies)
"""
from .actions import Action, slimming_actions
from .pareto import dominates, hypervolume, non_dominated

__all__ = ["Action", "SearchRun", "Strategy", "slimming_actions", "dominates", "hypervolume", "list_strategies",
           "non_dominated", "register_strategy"]
_STRATEGY_API = ("SearchRun", "Strategy", "list_strategies", "register_strategy")


def __getattr__(name):  # the strategies (and Optuna) load only when asked for
    if name in _STRATEGY_API:
        from . import strategies
        return getattr(strategies, name)
    raise AttributeError(f"module 'hwnas.search' has no attribute {name!r}")
