"""The search: strategies (nsga2, tpe, random through Optuna; mes_greedy), Pareto fronts, reports.

    python -m hwnas.search +target=coreml          # the app (docs/search.md)
    python -m hwnas.search targets=[coreml,onnxruntime_cpu,torch_cuda]   # one search, several targets
    python -m hwnas.search.server --storage DB_URL  # Optuna's gRPC storage proxy for workers on many machines

    from hwnas.search import slimming_actions, hypervolume, non_dominated
"""
from .actions import Action, slimming_actions
from .pareto import dominates, hypervolume, non_dominated

__all__ = ["Action", "slimming_actions", "dominates", "hypervolume", "non_dominated"]
