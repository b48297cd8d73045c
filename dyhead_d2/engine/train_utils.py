"""Small pieces the training script needs that detectron2.engine does not provide on CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer
from torch import nn

__all__ = ["AutocastForward", "add_gradient_clipping", "build_trainer"]


class AutocastForward(nn.Module):
    """Runs the wrapped model's forward under ``torch.autocast``.

    Detectron2's ``AMPTrainer`` requires CUDA; on CPU, bfloat16 autocast needs no gradient
    scaling, so wrapping the forward is all mixed precision takes there. Checkpoints are written
    from the wrapped model, so their keys do not change.
    """

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(*args, **kwargs)


def add_gradient_clipping(
    optimizer: torch.optim.Optimizer, max_norm: float, norm_type: float = 2.0
) -> torch.utils.hooks.RemovableHandle:
    """Clip the global gradient norm of all the optimizer's parameters before every step.

    A step pre-hook, so it works with any trainer; under a GradScaler it sees unscaled gradients,
    because ``GradScaler.step`` unscales before it calls ``optimizer.step``.
    """
    if max_norm <= 0:
        raise ValueError(f"gradient clipping needs max_norm > 0, got {max_norm}")

    def clip(opt, args, kwargs):
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)

    return optimizer.register_step_pre_hook(clip)


def build_trainer(
    model: nn.Module,
    data_loader: Iterable,
    optimizer: torch.optim.Optimizer,
    precision: str,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> SimpleTrainer:
    """The Detectron2 trainer for a :class:`~dyhead_d2.engine.Precision` mode.

    "cuda_float16" is Detectron2's ``AMPTrainer`` (float16 autocast + GradScaler);
    "cpu_bfloat16" a ``SimpleTrainer`` over :class:`AutocastForward` (``AMPTrainer`` requires
    CUDA); "float32" a plain ``SimpleTrainer``. ``wrap`` (e.g. DDP) is applied to the model last.
    """
    modes = ("float32", "cuda_float16", "cpu_bfloat16")
    if precision not in modes:
        raise ValueError(f"precision must be one of {modes}, got {precision!r}")
    if precision == "cpu_bfloat16":
        model = AutocastForward(model, "cpu")
    if wrap is not None:
        model = wrap(model)
    trainer_class = AMPTrainer if precision == "cuda_float16" else SimpleTrainer
    return trainer_class(model, data_loader, optimizer)
