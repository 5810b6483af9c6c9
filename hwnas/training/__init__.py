"""Supernet training: the sandwich rule with in-place distillation, data-parallel over `torchrun`.

    from hwnas.training import TrainConfig, train
    train("efficientformerv2", {"name": "digits"}, TrainConfig(epochs=2), "runs/x")  # -> runs/x/supernet.pt

No Hydra here (the app `python -m hwnas.train` wraps this), so scripts on machines without it
(the GPU benchmarks under experiments/) can use the same code.
"""
from .sandwich import distill_loss, finish_buffers, sample_archs, sandwich_step
from .trainer import TrainConfig, lr_at, make_optimizer, train, train_config

__all__ = ["TrainConfig", "distill_loss", "finish_buffers", "lr_at", "make_optimizer", "sample_archs",
           "sandwich_step", "train", "train_config"]
