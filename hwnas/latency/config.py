"""The typed schema of the Hydra `target` group (`hwnas/conf/target/*.yaml`).

Plain dataclasses (no Hydra import at module level, so the GPU machine can import this package);
`register_target()` puts the schema in Hydra's ConfigStore as `target/base_target`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hwnas.config import CONF_DIR as APP_CONF_DIR
from hwnas.mes import ALPHA_LATENCY, ALPHA_SIZE, SCORE, U_SIZE


@dataclass
class MesConfig:
    """Mobile Efficiency Score constants: MES = score · (latency/u_latency)^-α_lat · (params/u_size)^-α_size.
    Defaults: the paper's, stated once in `hwnas.mes`."""
    score: float = SCORE
    u_size: float = U_SIZE
    u_latency_ms: Optional[float] = None  # null: `mes_unit_latency_ms` from the table's provenance
    alpha_latency: float = ALPHA_LATENCY
    alpha_size: float = ALPHA_SIZE


@dataclass
class TargetConfig:
    name: str = "onnxruntime_cpu"  # onnxruntime_cpu | torch_cuda | tensorrt | coreml
    runtime: str = "onnxruntime"
    precision: str = "fp32"
    batch: int = 1
    threads: int = 1
    warmup: int = 10
    repeats: int = 50
    max_seconds: float = 5.0  # per measurement; stops early once min_runs are done
    min_runs: int = 10
    clock: str = "wall"  # wall | thread (CPU time of the timing thread; onnxruntime_cpu with 1 thread)
    canary: bool = False  # onnxruntime_cpu: scale every measurement by a fixed canary model's drift
    table: Optional[str] = None  # null: the best complete table for the space under tables_dir/<name>/
    tables_dir: Optional[str] = None  # null: the shipped tables (latency_tables/)
    allow_stale: bool = False  # use rows whose fingerprint no longer matches the code (said loudly)
    opset: int = 17  # onnxruntime_cpu, tensorrt
    cuda_graphs: bool = True  # torch_cuda
    channels_last: bool = True  # torch_cuda (the GPU deploy recipe)
    compute_units: str = "ALL"  # coreml
    workspace_gb: float = 4.0  # tensorrt
    mes: MesConfig = field(default_factory=MesConfig)


CONF_DIR = APP_CONF_DIR / "target"


def target_settings(name: str) -> dict:
    """The keys of `hwnas/conf/target/<name>.yaml` as a dict, without Hydra (for scripts that run
    where Hydra is not installed, like the GPU machine; PyYAML is a dependency of hwnas and timm)."""
    import yaml
    path = CONF_DIR / f"{name}.yaml"
    if not path.exists():
        from .backends import UnknownTargetError
        known = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
        raise UnknownTargetError(f"unknown target {name!r}; known targets: {known}")
    d = yaml.safe_load(path.read_text())
    d.pop("defaults", None)
    return d


_REGISTERED = False


def register_target() -> None:
    """Register `TargetConfig` as `target/base_target` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from hydra.core.config_store import ConfigStore
    ConfigStore.instance().store(group="target", name="base_target", node=TargetConfig)
    _REGISTERED = True
