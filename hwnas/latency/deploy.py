"""One deploy form per target: the function that turns a static model or block into exactly what
that target runs. The profiler, the fidelity experiment, `verify=true` and `hwnas.extract` all go
through it, so what a table times is what ships.

    form = deploy_form("torch_cuda", batch=8, precision="fp16", channels_last=True)
    module = form.module(model)               # in place: BN folded, the target's rewrites, dtype, memory format
    x = form.example_input(shape, "cuda")     # an input as the target feeds it

| target | what it runs |
|---|---|
| `torch_cuda` | the module itself: BatchNorms folded, every x2 bilinear upsample as `Upsample2xBilinear` (elementwise, also when traced), cast to the precision, channels_last (the default) |
| `onnxruntime_cpu`, `tensorrt` | the ONNX graph exported from the BN-folded fp32 module, every x2 upsample as `nn.Upsample` (one Resize node) |
| `coreml` | the ML Program converted from the BN-folded fp32 module, upsample as for ONNX |
| `torch_inductor` | the `torch_cuda` module compiled ahead of time by AOTInductor (`hwnas.convert.aoti`): what `format=aoti` ships |

A whole model's form is made of its blocks' forms (each rewrite acts block by block, nothing is
added between blocks; `tests/test_latency_fingerprint.py` checks it), so the fingerprints of the
blocks of an exported model can be compared with table rows. No Hydra or Optuna import: this
runs on the GPU machine.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from hwnas.convert.optimize import DTYPES, fold, optimize_for_gpu, replace_upsamples, torch_upsample

from .config import TorchCUDAConfig, TorchInductorConfig
from .target import get_target

__all__ = ["DTYPES", "CoreMLProgram", "DeployForm", "ExportedGraph", "TorchCUDAModule", "TorchInductorPackage",
           "deploy_form", "fold"]


class DeployForm:
    """What one target runs. Subclasses implement `module` and `describe`; the target that makes
    the form (`Target.deploy_form`) sets `target`, its name."""

    target = ""

    def __init__(self, batch: int = 1, precision: str = "fp32"):
        if precision not in DTYPES:
            from hwnas.errors import ConfigError
            raise ConfigError(f"precision={precision!r}: allowed: {', '.join(DTYPES)}")
        self.batch = int(batch)
        self.precision = precision

    def module(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def example_input(self, shape: tuple[int, ...], device: str | torch.device = "cpu",
                      random: bool = True) -> torch.Tensor:
        """An input of `shape` as this target feeds it (dtype, memory format)."""
        make = torch.randn if random else torch.empty
        return make(*shape, device=device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def settings(self) -> dict:
        """The arguments that rebuild this form (stored in a table's provenance)."""
        return {"batch": self.batch, "precision": self.precision}

    def salt(self) -> str:
        """What fixes the deployed graph beyond the traced module: mixed into every fingerprint."""
        return self.target

    def describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings()})"


class ExportedGraph(DeployForm):
    """ONNX Runtime and TensorRT run the ONNX graph exported from the BN-folded fp32 module."""

    def __init__(self, batch: int = 1, precision: str = "fp32", opset: int = 17):
        super().__init__(batch, precision)
        self.opset = int(opset)

    def module(self, model: nn.Module) -> nn.Module:
        model = fold(model.float())
        replace_upsamples(model, torch_upsample)  # ORT's Resize is fast; the elementwise form measured 3 % slower
        return model.eval()

    def settings(self) -> dict:
        return {"batch": self.batch, "precision": self.precision, "opset": self.opset}

    def salt(self) -> str:  # the graph is fp32; TensorRT's engine precision changes what runs
        return f"onnx-opset{self.opset}-{self.target}-{self.precision}"

    def describe(self) -> str:
        return (f"ONNX opset {self.opset} graph exported (TorchScript exporter) from the BN-folded fp32 module, "
                f"x2 upsample as one Resize; batch {self.batch}")


class CoreMLProgram(DeployForm):
    """Core ML runs the ML Program converted (torch.export frontend) from the BN-folded fp32 module."""


    def __init__(self, batch: int = 1, precision: str = "fp16"):
        super().__init__(batch, precision)

    def module(self, model: nn.Module) -> nn.Module:
        model = fold(model.float())
        replace_upsamples(model, torch_upsample)
        return model.eval()

    def salt(self) -> str:
        return f"coreml-mlprogram-{self.precision}"

    def describe(self) -> str:
        return (f"ML Program ({self.precision}) converted with coremltools from the BN-folded fp32 module, "
                f"x2 upsample as PyTorch's op; batch {self.batch}")


class TorchCUDAModule(DeployForm):
    """PyTorch on an NVIDIA GPU runs the module: the GPU recipe (`hwnas.convert.optimize.optimize_for_gpu`)."""


    #: how attention runs: "matmul" (matmul, softmax, matmul: what every table before this setting timed) or
    #: "sdpa" (`hwnas.convert.optimize.use_sdpa`: one `scaled_dot_product_attention` call, a fused kernel on a
    #: GPU, in Next-ViT's E-MHSA and EfficientFormerV2's downsampling attention; same outputs to rounding)
    ATTENTION = TorchCUDAConfig.attentions

    def __init__(self, batch: int = 8, precision: str = "fp16", channels_last: bool = True, attention: str = "matmul"):
        super().__init__(batch, precision)
        from hwnas.errors import ConfigError
        if attention not in self.ATTENTION:
            raise ConfigError(f"attention={attention!r}: allowed: {', '.join(self.ATTENTION)}")
        self.channels_last = bool(channels_last)
        self.attention = attention

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def module(self, model: nn.Module) -> nn.Module:
        model = optimize_for_gpu(model, channels_last=self.channels_last, precision=self.precision)
        if self.attention == "sdpa":
            from hwnas.convert.optimize import use_sdpa
            use_sdpa(model)
        return model

    def example_input(self, shape, device="cpu", random: bool = True) -> torch.Tensor:
        return super().example_input(shape, device, random).contiguous(memory_format=self.memory_format)

    def settings(self) -> dict:
        # "attention" is named only when it is not the default, so the forms (and the fingerprints, package
        # keys and tables) of the default are the ones timed before the setting existed
        sdpa = {"attention": self.attention} if self.attention != "matmul" else {}
        return {"batch": self.batch, "precision": self.precision, "channels_last": self.channels_last, **sdpa}

    def _attention_words(self) -> str:
        return "attention as scaled_dot_product_attention, " if self.attention == "sdpa" else ""

    def salt(self) -> str:
        return "torch-eager"

    def describe(self) -> str:
        return (f"the BN-folded module in {self.precision}, x2 upsample elementwise (Upsample2xBilinear), "
                f"{self._attention_words()}{'channels_last' if self.channels_last else 'NCHW'}; batch {self.batch}")


class TorchInductorPackage(TorchCUDAModule):
    """PyTorch through AOTInductor runs the `torch_cuda` module (the GPU recipe) compiled ahead of
    time: `module` is the graph that is compiled, `compile` makes the package (`hwnas.convert.aoti`).
    Compiling changes what runs (fusion, kernel choice) but not what is computed, so a fingerprint
    is the module's trace salted with this target."""


    #: how a depthwise convolution is compiled: "cudnn" (the convolution op: cuDNN's grouped kernel) or
    #: "shifted" (`hwnas.convert.optimize.ShiftedDepthwiseConv2d`: k² multiply-adds Inductor fuses with
    #: the bias, activation and residual around them into one kernel); "auto" is shifted at batch 1 and
    #: cudnn above, as measured on an H100 (experiments/results/deploy_speed_compiled_nvidia-h100-80gb-hbm3.md:
    #: EfficientFormerV2-S0/S1 shifted 0.81-0.86x of cudnn at batch 1, 1.05-1.10x at batch 8)
    DEPTHWISE = TorchInductorConfig.depthwises
    #: `autotune`: the package is compiled with Inductor's max_autotune on CUDA (each GEMM and convolution
    #: benchmarked among Triton templates and cuBLAS/cuDNN at compile time: 0.65-0.99x the time of the
    #: package compiled without it, same H100 rows); CPU packages compile without it (a smoke path)
    AUTOTUNE_CONFIGS = {"max_autotune": True}

    def __init__(self, batch: int = 8, precision: str = "fp16", channels_last: bool = True,
                 depthwise: str = "auto", autotune: bool = True, attention: str = "matmul"):
        super().__init__(batch, precision, channels_last, attention)
        from hwnas.errors import ConfigError
        if depthwise not in self.DEPTHWISE:
            raise ConfigError(f"depthwise={depthwise!r}: allowed: {', '.join(self.DEPTHWISE)}")
        if not isinstance(autotune, bool):
            raise ConfigError(f"autotune={autotune!r}: allowed: true, false")
        #: what runs: "auto" resolved by the batch (settings() name it, so tables and caches key on it)
        self.depthwise = ("shifted" if self.batch == 1 else "cudnn") if depthwise == "auto" else depthwise
        self.autotune = autotune

    def module(self, model: nn.Module) -> nn.Module:
        model = super().module(model)
        if self.depthwise == "shifted":
            from hwnas.convert.optimize import replace_depthwise_convs
            replace_depthwise_convs(model)
        return model

    def settings(self) -> dict:
        return {**super().settings(), "depthwise": self.depthwise, "autotune": self.autotune}

    def salt(self) -> str:
        # the same graph compiled with autotuning runs other kernels: rows timed one way are not the other's
        return "torch-inductor-aoti" + ("+max_autotune" if self.autotune else "")

    def inductor_configs(self, device: str) -> dict:
        """The Inductor configs this form compiles with on `device`."""
        return dict(self.AUTOTUNE_CONFIGS) if self.autotune and device == "cuda" else {}

    def compile(self, module: nn.Module, input_shape: tuple[int, ...], path, device: str = "cuda",
                native_input: bool = False, metadata: dict | None = None, inductor_configs: dict | None = None):
        """The AOTInductor package of `module` (already in this form) at `input_shape`, for `device`
        (`hwnas.convert.aoti.compile_aoti`: float32 NCHW in and out, or with `native_input` this
        form's dtype and memory format, as a lone block is timed)."""
        from hwnas.convert.aoti import compile_aoti
        configs = {**self.inductor_configs(device), **(inductor_configs or {})}
        return compile_aoti(module, input_shape, path, device=device, channels_last=self.channels_last,
                            native_input=native_input,
                            metadata={"deploy_form": self.describe(), "form": self.settings(),
                                      "inductor_configs": configs, **(metadata or {})},
                            inductor_configs=configs or None)

    def describe(self) -> str:
        return (f"the BN-folded module in {self.precision}, x2 upsample elementwise (Upsample2xBilinear), "
                f"{self._attention_words()}{'channels_last' if self.channels_last else 'NCHW'}, "
                f"{'depthwise convolutions as shifted multiply-adds, ' if self.depthwise == 'shifted' else ''}"
                f"compiled by AOTInductor{' with max_autotune on CUDA' if self.autotune else ''} "
                f"(torch.export, fixed shape, float32 NCHW in and out); batch {self.batch}")


def deploy_form(target: str, **settings: Any) -> DeployForm:
    """The deploy form of target `target` (`hwnas.latency.target`), configured by its settings (the
    target's `form_keys`; None takes the default, another key is a `ConfigError` naming the allowed
    ones). Works on any machine: no runtime is needed."""
    return get_target(target).deploy_form(**settings)
