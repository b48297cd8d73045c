"""CPU stand-ins for what a CUDA device does differently, for tests on machines without one.

* :func:`emulate_tf32_convolutions`: convolutions as cuDNN computes them in TF32 (PyTorch's
  default on Ampere and later GPUs): every operand rounded to TF32, float32 accumulation.
* :class:`DeviceSyncCounter`: which ops of a CPU run would make the host wait for the device.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary


def round_to_tf32(t: Tensor) -> Tensor:
    """float32 values rounded to TF32's 10 mantissa bits (to nearest, ties away from zero, as
    CUDA's ``cvt.rna.tf32.f32``); still stored as float32."""
    bits = t.float().contiguous().view(torch.int32)
    # The low 13 of float32's 23 mantissa bits go: add half of their range to the magnitude
    # (sign-magnitude, so this rounds away from zero), then clear them.
    return ((bits + 0x1000) & -0x2000).view(torch.float32).view(t.shape)


class _Tf32Conv2d(torch.autograd.Function):
    """conv2d whose forward and both backward convolutions see TF32-rounded operands."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        x, weight = round_to_tf32(x), round_to_tf32(weight)
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return torch.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        grad_r = round_to_tf32(grad)
        gx = torch.nn.grad.conv2d_input(x.shape, weight, grad_r, stride, padding, dilation, groups)
        gw = torch.nn.grad.conv2d_weight(x, weight.shape, grad_r, stride, padding, dilation, groups)
        gb = grad.sum(dim=(0, 2, 3)) if ctx.has_bias else None
        return gx, gw, gb, None, None, None, None


def _tf32_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _Tf32Conv2d.apply(input, weight, bias, stride, padding, dilation, groups)


@contextmanager
def emulate_tf32_convolutions() -> Iterator[None]:
    """Within the block, every ``F.conv2d`` (so every ``nn.Conv2d``) runs as cuDNN's TF32 mode
    does: inputs, weights and, in the backward, output gradients rounded to TF32; float32
    accumulation. Matrix products stay float32, as PyTorch's default keeps them on CUDA."""
    real = F.conv2d
    F.conv2d = _tf32_conv2d
    try:
        yield
    finally:
        F.conv2d = real


# ----------------------------------------------------------------------------------------------
# Host reads (device synchronisations)
# ----------------------------------------------------------------------------------------------

_aten = torch.ops.aten

# Ops whose CUDA kernels read a result back to the host before returning: a scalar, or the size
# of a data-dependent output. (Boolean-mask indexing runs a nonzero first.)
_SYNCING_OPS = {
    _aten._local_scalar_dense.default,
    _aten.is_nonzero.default,
    _aten.equal.default,
    _aten.nonzero.default,
    _aten.argwhere.default,
    _aten.masked_select.default,
    _aten.unique_consecutive.default,
    _aten._unique2.default,
    _aten.unique_dim.default,
    _aten.bincount.default,
}
_MASK_INDEXING_OPS = {
    _aten.index.Tensor,
    _aten.index_put.default,
    _aten.index_put_.default,
    _aten._index_put_impl_.default,
}


def _mask_indexed(func, args) -> bool:
    if func not in _MASK_INDEXING_OPS:
        return False
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1])


def _is_sync(func, args, kwargs) -> bool:
    if func in _SYNCING_OPS or _mask_indexed(func, args):
        return True
    if func is _aten.repeat_interleave.Tensor:
        return kwargs.get("output_size") is None
    # torchvision's CUDA NMS copies its suppression mask to the host.
    return str(func).startswith("torchvision.nms")


class DeviceSyncCounter(TorchDispatchMode):
    """Counts, on a CPU run, the ops that would make the host wait for a CUDA device.

    On a CPU every tensor is a host tensor, so the counter tracks which tensors would live on the
    accelerator: those given to :meth:`mark` (a model's parameters and buffers, its inputs),
    what ops compute from them, and what factory functions create with an explicit ``device``
    (``torch.arange(n, device=x.device)``); a tensor made without one (Detectron2's image sizes)
    stays on the host, as it would on a GPU run. A host read of a device tensor is a syncing op
    (:data:`_SYNCING_OPS`, boolean-mask indexing, torchvision's NMS) or ``tolist`` / ``numpy``
    on it. ``syncs`` lists them as ``"op (file:line function)"``, the line being the first
    frame outside torch; :meth:`within` those made while a function was running. Backward ops
    count too (the autograd engine runs a CPU backward in the calling thread, under this mode).
    """

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []
        self._stacks: list[set[str]] = []
        self._device = WeakIdKeyDictionary()
        self._patched: dict[str, object] = {}

    def mark(self, *objects) -> None:
        """Tensors, modules (parameters and buffers) and nested dicts / lists / Instances of
        tensors that live on the device."""
        for obj in objects:
            if isinstance(obj, Tensor):
                self._device[obj] = True
            elif isinstance(obj, torch.nn.Module):
                self.mark(*obj.parameters(), *obj.buffers())
            elif isinstance(obj, dict):
                self.mark(*obj.values())
            elif isinstance(obj, (list, tuple)):
                self.mark(*obj)
            elif hasattr(obj, "get_fields"):  # detectron2's Instances
                self.mark(*obj.get_fields().values())
            elif hasattr(obj, "tensor"):  # detectron2's Boxes
                self.mark(obj.tensor)

    def _on_device(self, t) -> bool:
        return isinstance(t, Tensor) and t in self._device

    def within(self, function: str) -> list[str]:
        """The syncs made while a function of this name was on the stack."""
        return [s for s, names in zip(self.syncs, self._stacks) if function in names]

    def _record(self, what: str) -> None:
        frames = [
            f for f in traceback.extract_stack()[:-2] if f"{os.sep}torch{os.sep}" not in f.filename
        ]
        f = frames[-1] if frames else None
        where = f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" if f else "?"
        self.syncs.append(f"{what} ({where})")
        self._stacks.append({f.name for f in frames})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, Tensor)]
        on_device = any(self._on_device(t) for t in flat)
        if not flat and kwargs.get("device") is not None:
            on_device = True  # a factory told which device: the model's
        if on_device and _is_sync(func, args, kwargs):
            self._record(str(func))
        out = func(*args, **kwargs)
        if on_device:
            for t in pytree.tree_leaves(out):
                if isinstance(t, Tensor):
                    self._device[t] = True
        return out

    def __enter__(self):
        for name in ("tolist", "numpy"):
            real = getattr(Tensor, name)
            self._patched[name] = Tensor.__dict__.get(name)

            def counted(t, *a, _real=real, _name=name, **kw):
                if self._on_device(t):
                    self._record(f"Tensor.{_name}")
                return _real(t, *a, **kw)

            setattr(Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, own in self._patched.items():
            if own is None:  # inherited from torch._C.TensorBase
                delattr(Tensor, name)
            else:
                setattr(Tensor, name, own)
        self._patched.clear()
        return super().__exit__(*exc)
