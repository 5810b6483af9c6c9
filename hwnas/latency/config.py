"""The typed schemas of the Hydra `target` group: one per target (`hwnas/conf/target/<name>.yaml`).

Every target shares `TargetConfig` (how long to time, which table to use, the MES constants); each
adds the options its runtime takes (`threads` and `clock` only where ONNX Runtime honours them,
`cuda_graphs` for PyTorch on CUDA, ...). A key a target does not take fails when the config is
read -- in Hydra at the app's start-up, in `target_config()` (what `get_backend` calls) naming the
allowed keys -- and so does a value out of range (`__post_init__`).

Plain dataclasses (no Hydra import at module level, so the GPU machine can import this package);
`hwnas.latency.target.store_schemas()` stores each registered target's schema in Hydra's ConfigStore,
outside the `target` group (as `schema_target_<name>`, which the target's YAML names in its
defaults), so that the option list of `+target=` holds only real targets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

from hwnas.config import CONF_DIR as APP_CONF_DIR
from hwnas.errors import ConfigError, check_choice, check_min, check_positive, check_range
from hwnas.mes import ALPHA_LATENCY, ALPHA_SIZE, SCORE, U_SIZE

from .target import get_target

CLOCKS = ("wall", "thread")
#: ONNX opsets the export path is tested with (the TorchScript exporter of torch 2.x; Resize, LayerNorm)
OPSETS = (13, 20)


@dataclass
class MesConfig:
    """Mobile Efficiency Score constants: MES = score · (latency/u_latency)^-α_lat · (params/u_size)^-α_size.
    Defaults: the paper's, stated once in `hwnas.mes`."""
    score: float = SCORE
    u_size: float = U_SIZE
    u_latency_ms: Optional[float] = None  # null: `mes_unit_latency_ms` from the table's provenance
    alpha_latency: float = ALPHA_LATENCY
    alpha_size: float = ALPHA_SIZE

    def __post_init__(self):
        check_positive("target.mes", "score", self.score)
        check_positive("target.mes", "u_size", self.u_size)
        check_positive("target.mes", "u_latency_ms", self.u_latency_ms, optional=True,
                       hint="null takes the latency table's MobileNetV2 latency")
        check_min("target.mes", "alpha_latency", self.alpha_latency, 0)
        check_min("target.mes", "alpha_size", self.alpha_size, 0)


@dataclass
class TargetConfig:
    """What every target has: the timing loop, the table a search uses, the MES constants."""
    name: str = ""
    runtime: str = ""
    precision: str = "fp32"
    batch: int = 1
    warmup: int = 10  # untimed runs first
    repeats: int = 50  # timed runs at most ...
    max_seconds: float = 5.0  # ... or fewer once this many seconds have passed ...
    min_runs: int = 10  # ... but never fewer than this many
    table: Optional[str] = None  # null: the best complete table for the space under tables_dir/<name>/
    tables_dir: Optional[str] = None  # null: the shipped tables (latency_tables/)
    allow_stale: bool = False  # use rows whose fingerprint no longer matches the code (said loudly)
    mes: MesConfig = field(default_factory=MesConfig)

    #: the precisions this target times
    precisions = ("fp32",)

    def __post_init__(self):
        if isinstance(self.mes, Mapping):  # built from plain data (a YAML file, target_settings())
            self.mes = MesConfig(**self.mes)
        check_choice("target", "precision", self.precision, self.precisions)
        check_min("target", "batch", self.batch, 1)
        check_min("target", "warmup", self.warmup, 0)
        check_min("target", "repeats", self.repeats, 1)
        check_min("target", "min_runs", self.min_runs, 1)
        check_min("target", "max_seconds", self.max_seconds, 0)

    def backend_settings(self) -> dict:
        """The keys the target's timing backend takes (`hwnas.latency.backends`)."""
        return {k: v for k, v in asdict(self).items() if k not in APP_KEYS}


#: keys of the app (which table, the MES), not of the timing backend
APP_KEYS = ("name", "runtime", "table", "tables_dir", "allow_stale", "mes")


@dataclass
class OnnxRuntimeCPUConfig(TargetConfig):
    name: str = "onnxruntime_cpu"
    runtime: str = "onnxruntime"
    threads: int = 1  # intra-op threads of the session
    # thread: the timing thread's CPU time (preemption on a shared machine is not counted; 1 thread only)
    clock: str = "thread"
    canary: bool = False  # scale every measurement by a fixed canary model's drift
    # whole networks (adapt's fit networks, held-out subnets) timed round-robin over this many rounds, in
    # groups (Backend.time_round_robin); 0: one after another (warmup, then repeats / max_seconds each)
    rounds: int = 0
    opset: int = 17

    def __post_init__(self):
        super().__post_init__()
        check_min("target", "threads", self.threads, 1)
        check_min("target", "rounds", self.rounds, 0, hint="0: whole networks timed one after another")
        check_choice("target", "clock", self.clock, CLOCKS)
        if self.clock == "thread" and self.threads != 1:
            raise ConfigError(f"target.threads={self.threads} with target.clock=thread: the thread clock "
                              "measures the calling thread only; use target.clock=wall with threads > 1")
        check_range("target", "opset", self.opset, *OPSETS)


@dataclass
class TorchCUDAConfig(TargetConfig):
    name: str = "torch_cuda"
    runtime: str = "torch"
    precision: str = "fp16"
    batch: int = 8
    cuda_graphs: bool = True  # each block/model captured in one CUDA graph, replays timed
    channels_last: bool = True  # the GPU deploy recipe's memory format
    # matmul | sdpa: attention as matmul, softmax, matmul (what the shipped tables timed) or one
    # scaled_dot_product_attention call (a fused kernel; Next-ViT's E-MHSA, EfficientFormerV2's downsampling attention)
    attention: str = "matmul"

    precisions = ("fp16", "bf16", "fp32")
    attentions = ("matmul", "sdpa")

    def __post_init__(self):
        super().__post_init__()
        check_choice("target", "attention", self.attention, self.attentions)


@dataclass
class TorchInductorConfig(TorchCUDAConfig):
    """torch_cuda's settings (precision, batch, CUDA graphs, channels_last inside the package), compiled."""
    name: str = "torch_inductor"
    runtime: str = "torch-aoti"
    compile_workers: int = 8  # worker processes compiling packages in parallel before they are timed (1: inline)
    compile_cache: Optional[str] = None  # folder of compiled packages; null: <hwnas cache>/aoti/
    # auto | cudnn | shifted: depthwise convolutions as cuDNN's grouped kernel or as multiply-adds Inductor fuses;
    # auto: shifted at batch 1, cudnn above (what measured faster on an H100: deploy.TorchInductorPackage)
    depthwise: str = "auto"
    autotune: bool = True  # Inductor's max_autotune for CUDA packages: GEMM/conv kernels benchmarked at compile time

    depthwises = ("auto", "cudnn", "shifted")

    def __post_init__(self):
        super().__post_init__()
        check_min("target", "compile_workers", self.compile_workers, 1)
        check_choice("target", "depthwise", self.depthwise, self.depthwises)


@dataclass
class CoreMLConfig(TargetConfig):
    name: str = "coreml"
    runtime: str = "coremltools"
    precision: str = "fp16"
    compute_units: str = "ALL"  # ALL | CPU_AND_GPU | CPU_AND_NE | CPU_ONLY

    precisions = ("fp16", "fp32")

    def __post_init__(self):
        super().__post_init__()
        check_choice("target", "compute_units", self.compute_units, ("ALL", "CPU_AND_GPU", "CPU_AND_NE", "CPU_ONLY"))


@dataclass
class TensorRTConfig(TargetConfig):
    name: str = "tensorrt"
    runtime: str = "tensorrt"
    precision: str = "fp16"
    batch: int = 8
    opset: int = 17
    workspace_gb: float = 4.0  # the builder's workspace memory pool

    precisions = ("fp16", "fp32")

    def __post_init__(self):
        super().__post_init__()
        check_range("target", "opset", self.opset, *OPSETS)
        check_positive("target", "workspace_gb", self.workspace_gb)


CONF_DIR = APP_CONF_DIR / "target"


def target_keys(name: str) -> list[str]:
    """The keys target `name` takes."""
    return [f.name for f in fields(schema_of(name))]


def schema_of(name: str) -> type[TargetConfig]:
    """The schema of the target registered as `name` (`hwnas.latency.target`)."""
    return get_target(name).schema


def target_config(name: str, settings: Mapping[str, Any] | None = None) -> TargetConfig:
    """Target `name`'s schema filled from `settings` (a mapping or an OmegaConf node; missing keys
    take the schema's defaults): a key the target does not take, or a value out of range, is a
    `ConfigError` naming it."""
    cls = schema_of(name)
    if settings is not None and type(settings).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf
        settings = OmegaConf.to_container(settings, resolve=True)
    settings = dict(settings or {})
    if settings.get("name", name) != name:
        raise ConfigError(f"target.name={settings['name']!r} in the settings of target {name!r}")
    allowed = target_keys(name)
    unknown = sorted(set(map(str, settings)) - set(allowed))
    if unknown:
        raise ConfigError(f"target.{unknown[0]}: target {name} takes no such key (its keys: {', '.join(allowed)})")
    return cls(**settings)


def target_settings(name: str) -> dict:
    """The default keys of target `name` as a dict, without Hydra (for scripts that run where Hydra is
    not installed, like the GPU machine): `hwnas/conf/target/<name>.yaml`, or a registered target's
    schema defaults (`Target.defaults`)."""
    return get_target(name).defaults()


__all__ = ["APP_KEYS", "CoreMLConfig", "MesConfig", "OnnxRuntimeCPUConfig", "TargetConfig", "TensorRTConfig",
           "TorchCUDAConfig", "TorchInductorConfig", "schema_of", "target_config", "target_keys", "target_settings"]
