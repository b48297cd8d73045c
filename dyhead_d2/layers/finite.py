"""Finding NaN and Inf values, and the error that reports them.

A diverged training run, a poisoned checkpoint or a broken input shows up as NaN/Inf somewhere.
The guards of this project (the DyHead blocks, the checkpointer, the training script) report it
with :class:`NonFiniteError`, naming the first tensor that holds such values and how many. The
checks cost one reduction per tensor and a single host read per call (a device synchronisation
on CUDA), so callers batch them; the per-tensor counts are only computed once something is found.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = ["NonFiniteError", "all_finite", "describe_non_finite", "find_non_finite"]


class NonFiniteError(FloatingPointError):
    """A tensor that must be finite holds NaN or Inf values; the message names it.

    A ``FloatingPointError``, like the one Detectron2's trainer raises for a non-finite loss.
    """


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every floating-point value of ``tensors`` is finite: one reduction per tensor
    and one host read for all of them (one synchronisation on an accelerator)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point() or t.is_complex()]
    if not flags:
        return True
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())


def describe_non_finite(t: Tensor | np.ndarray) -> str:
    """``"3 NaN and 1 Inf of 576 values"``."""
    t = torch.as_tensor(t)
    nan = int(torch.isnan(t).sum())
    inf = int(torch.isinf(t).sum())
    return f"{nan} NaN and {inf} Inf of {t.numel()} values"


def _named_arrays(obj, prefix: str) -> Iterator[tuple[str, Tensor | np.ndarray]]:
    """Floating-point tensors and arrays of a nested state (dicts, lists, tuples), with dotted
    names, in order."""
    if isinstance(obj, Tensor):
        if obj.is_floating_point() or obj.is_complex():
            yield prefix, obj
    elif isinstance(obj, np.ndarray):
        if np.issubdtype(obj.dtype, np.floating):
            yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _named_arrays(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _named_arrays(v, f"{prefix}.{i}" if prefix else str(i))


def find_non_finite(obj, prefix: str = "") -> tuple[str, str] | None:
    """The first tensor of ``obj`` (a tensor, or a nested dict/list of tensors or numpy arrays,
    e.g. a state dict or an optimizer's state) that holds NaN or Inf: ``(name, description)``,
    or None when everything is finite. Names are dotted paths from ``prefix``."""
    items = list(_named_arrays(obj, prefix))
    arrays_finite = all(np.isfinite(v).all() for _, v in items if isinstance(v, np.ndarray))
    if arrays_finite and all_finite(v.detach() for _, v in items if isinstance(v, Tensor)):
        return None  # the common case: one host read for everything
    for name, value in items:
        finite = np.isfinite(value).all() if isinstance(value, np.ndarray) else None
        if finite is None:
            finite = bool(torch.isfinite(value.detach()).all())
        if not finite:
            return name, describe_non_finite(value.detach() if isinstance(value, Tensor) else value)
    return None
