"""Latency tables: per-block latencies measured on a target, a fitted correction, and the proof.

    from hwnas.latency import LatencyTable, default_table_path, get_backend
    t = LatencyTable.load(default_table_path("onnxruntime_cpu", "nextvit"))
    t.predict(arch)  # ms: Σ block latencies + the correction fitted on whole networks
    t.describe()     # one line: what was measured where, and how well it predicts held-out subnets
    deploy_form("torch_cuda").module(model)   # what a target runs: the form every table row timed

A target is one registered `Target` (`hwnas.latency.target`; the built-in five in
`hwnas.latency.targets`). Free of Hydra and Optuna imports: the GPU machine profiles with this package alone.
"""
from .backends import Backend, TimingUnavailable, UnknownTargetError, get_backend, summarize
from .deploy import DeployForm, deploy_form
from .target import Target, get_target, list_targets, register_target, unregister_target
from . import targets as _targets  # noqa: F401  (registers the built-in targets)
from .table import (LatencyTable, LatencyTableError, MissingRowsError, StaleRowsError, default_table_path,
                    profile_command)

__all__ = ["Backend", "DeployForm", "LatencyTable", "LatencyTableError", "MissingRowsError", "StaleRowsError",
           "Target", "TimingUnavailable", "UnknownTargetError", "default_table_path", "deploy_form", "get_backend",
           "get_target", "list_targets", "profile_command", "register_target", "summarize", "unregister_target"]
