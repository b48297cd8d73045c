"""Modulated deformable convolution (DCNv2) used by DyHead's spatial-aware attention, and by
deformable backbones.

The implementation is chosen here (:func:`resolve_deform_impl`). :class:`ModulatedDeformConv`
runs :func:`modulated_deform_conv` on one input (what :meth:`DyHeadBlock.forward_per_level`
calls) or, with :meth:`ModulatedDeformConv.forward_levels`, the ``"sampled"`` implementation on
all levels at once (what :meth:`DyHeadBlock.forward_sampled` calls). :class:`DeformConv` is the
general layer of deformable backbones (groups, offset groups, dilation, with or without mask),
with the parameters of Detectron2's ``DeformConv`` / ``ModulatedDeformConv``. Two
implementations compute the same function:

* ``"torchvision"``: :func:`torchvision.ops.deform_conv2d`, the authors' algorithm as a compiled
  op. Fast on CUDA, slow on CPU (scalar im2col loop, serial backward).
* ``"sampled"``: :func:`~dyhead_d2.layers.sampled_deform_conv.sampled_deform_conv`, bilinear
  gathers + matrix multiplies in plain PyTorch; on CPU several times faster than torchvision,
  forward and backward. Grouped, multi-offset-group or dilated convolutions (deformable ResNeXt
  backbones) take the same sampling through
  :func:`~dyhead_d2.layers.grouped_deform_conv.sampled_grouped_deform_conv`.
* ``"auto"`` (the default everywhere): ``"sampled"`` on CPU, ``"torchvision"`` on every other
  device. The two agree to float rounding (about 1e-6 relative; outputs and all gradients, checked
  by the tests), which is why the default may differ between devices. CUDA keeps torchvision's
  compiled op until a measurement shows the sampled path faster there (``tools/gpu_check.py``
  times both on a GPU).

The choice is an argument (of the function, of the modules, of :class:`~dyhead_d2.DyHead`); there
is no global switch.

Non-finite offsets and masks. ``torchvision.ops.deform_conv2d`` reads memory at the sampling
positions an offset gives; a NaN offset makes it read out of bounds (a segfault on CPU with
torchvision 0.29.1; an illegal memory access on CUDA, as reported), and an Inf offset quietly
samples zero.
So :func:`modulated_deform_conv` never hands it a non-finite value: when any offset or mask value
is NaN or Inf, both implementations run on all-zero offsets and masks instead and **every output
value is NaN** (through the bias), so the non-finite input surfaces as non-finite output, as it
would through ``F.conv2d``, and never as a finite answer. The test is an ``isfinite``
reduction of each and a ``torch.where`` on the small offset/mask tensors, and it reads nothing
back to the host: no device synchronisation. :class:`~dyhead_d2.layers.dyhead.DyHeadBlock`
sanitises the offsets and masks of all levels (0 offsets, NaN masks) before either
implementation sees them (so :meth:`ModulatedDeformConv.forward_levels` needs no guard of its
own) and records a device-side flag; :class:`~dyhead_d2.layers.dyhead.DyHead` reads the flags
of all its blocks once and raises :class:`~dyhead_d2.layers.finite.NonFiniteError` naming the
block, the level and the first non-finite parameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from .grouped_deform_conv import sampled_grouped_deform_conv
from .sampled_deform_conv import (
    FULL_PRECISION,
    sampled_deform_conv,
    sampled_deform_conv_levels,
)

__all__ = [
    "DEFORM_IMPLS",
    "DeformConv",
    "ModulatedDeformConv",
    "check_deform_impl",
    "guard_non_finite",
    "modulated_deform_conv",
    "resolve_deform_impl",
]

DEFORM_IMPLS = ("auto", "torchvision", "sampled")


def check_deform_impl(deform_impl: str) -> str:
    if deform_impl not in DEFORM_IMPLS:
        raise ValueError(
            f"Unknown deform_impl {deform_impl!r}; expected one of {', '.join(DEFORM_IMPLS)}"
        )
    return deform_impl


def resolve_deform_impl(deform_impl: str, device: torch.device) -> str:
    """The concrete implementation ``deform_impl`` stands for on ``device``.

    ``"auto"`` is ``"sampled"`` on CPU (measured several times faster there, see
    ``tools/benchmark.py``) and ``"torchvision"`` elsewhere (see the module docstring).
    """
    if check_deform_impl(deform_impl) != "auto":
        return deform_impl
    return "sampled" if torch.device(device).type == "cpu" else "torchvision"


def modulated_deform_conv(
    x: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: int = 1,
    impl: str = "auto",
    dilation: int = 1,
) -> Tensor:
    """Deformable convolution (DCNv2, or DCNv1 without a mask), torchvision's function.

    Groups and offset groups follow from the shapes, as in :func:`torchvision.ops.deform_conv2d`:
    ``groups = C / weight.shape[1]``, ``G = offset.shape[1] / (2 * kh * kw)`` (input channel ``c``
    is sampled with offset group ``c // (C / G)``). DyHead's convolutions have one of each.

    Args:
        x: input features, (N, C, H, W).
        offset: sampling offsets, (N, 2 * G * kh * kw, Ho, Wo), per offset group the pairs
            (dy, dx) of each kernel tap.
        mask: modulation scalars, already passed through a sigmoid, (N, G * kh * kw, Ho, Wo);
            None for an unmodulated (DCNv1) convolution, which is a mask of ones.
        weight: (C_out, C / groups, kh, kw).
        bias: (C_out,) or None.
        impl: "auto", "torchvision" or "sampled"; see the module docstring. All give the same
            result up to float rounding. ``"sampled"`` with one group, one offset group and no
            dilation is :func:`~dyhead_d2.layers.sampled_deform_conv.sampled_deform_conv`; other
            shapes are :func:`~dyhead_d2.layers.grouped_deform_conv.sampled_grouped_deform_conv`.
        dilation: of the kernel taps.
    Returns:
        (N, C_out, Ho, Wo), in ``x``'s dtype (channels-last memory for ``"sampled"``); all NaN
        when ``offset`` or ``mask`` holds a NaN or Inf (which never reaches the op).

    Under autocast or with mixed dtypes the op runs in float32 (sampling offsets need the
    precision, and torchvision's CPU kernel has no reduced-precision path) and the result is cast
    back to ``x``'s dtype; so does ``"sampled"`` for inputs that are neither float32 nor float64.
    """
    impl = resolve_deform_impl(impl, x.device)
    if mask is None and impl != "torchvision":
        # The sampled paths always modulate: by one, which leaves every sample as it is.
        n, two_g_kk, ho, wo = offset.shape
        mask = offset.new_ones(n, two_g_kk // 2, ho, wo)
    offset, mask, bias = guard_non_finite(offset, mask, bias, weight)
    if impl == "torchvision":
        op = deform_conv2d
    elif _one_group_square(x, offset, weight) and dilation == 1:
        op = _sampled
    else:
        op = _sampled_grouped
    device_type = x.device.type
    dtypes = {x.dtype, offset.dtype, weight.dtype} | ({mask.dtype} if mask is not None else set())
    upcast = len(dtypes) > 1 or (impl == "sampled" and not dtypes <= set(FULL_PRECISION))
    if torch.is_autocast_enabled(device_type) or upcast:
        with torch.autocast(device_type, enabled=False):
            out = op(
                x.float(),
                offset.float(),
                weight.float(),
                None if bias is None else bias.float(),
                stride=stride,
                padding=padding,
                dilation=dilation,
                mask=None if mask is None else mask.float(),
            )
        return out.to(x.dtype)
    return op(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)


def guard_non_finite(
    offset: Tensor, mask: Tensor | None, bias: Tensor | None, weight: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Offsets and masks (None: no mask) that are safe to sample with, and a bias that makes
    every output NaN when they were not finite; no host read (see the module docstring)."""
    with torch.no_grad():
        finite = torch.isfinite(offset).all()
        if mask is not None:
            finite = finite & torch.isfinite(mask).all()
    offset = torch.where(finite, offset, offset.new_zeros(()))
    if mask is not None:
        mask = torch.where(finite, mask, mask.new_zeros(()))
    poison = torch.where(finite, 0.0, float("nan")).to(weight.dtype)
    if bias is None:
        bias = poison.expand(weight.shape[0]).contiguous()
    else:
        bias = bias + poison
    return offset, mask, bias


def _one_group_square(x: Tensor, offset: Tensor, weight: Tensor) -> bool:
    """Whether the convolution is what ``sampled_deform_conv`` computes: one group, one offset
    group, a square kernel."""
    _, c_per_group, kh, kw = weight.shape
    return c_per_group == x.shape[1] and kh == kw and offset.shape[1] == 2 * kh * kw


def _sampled(x, offset, weight, bias, *, stride, padding, dilation, mask):
    # torchvision's argument order, so every implementation is called the same way.
    return sampled_deform_conv(x, offset, mask, weight, bias, stride=stride, padding=padding)


def _sampled_grouped(x, offset, weight, bias, *, stride, padding, dilation, mask):
    return sampled_grouped_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation)


class ModulatedDeformConv(nn.Module):
    """A 3x3 (by default) DCNv2 layer whose offset and mask are supplied by the caller.

    DyHead predicts one offset/mask per level and shares it between three convolutions, so this
    module holds only the weight and the optional bias. ``deform_impl`` picks the implementation
    (see :func:`modulated_deform_conv`); it does not change parameters or results.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        bias: bool = True,
        deform_impl: str = "auto",
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.deform_impl = check_deform_impl(deform_impl)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Both ports: weights ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C * k * k, bias 0.
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size**2)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return modulated_deform_conv(
            x,
            offset,
            mask,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            impl=self.deform_impl,
        )

    def forward_levels(
        self, inputs: Sequence[Tensor], offsets: Sequence[Tensor], masks: Sequence[Tensor]
    ) -> list[Tensor]:
        """This convolution of several inputs at once with the ``"sampled"`` implementation
        (see :func:`~dyhead_d2.layers.sampled_deform_conv.sampled_deform_conv_levels`), whatever
        ``deform_impl`` is. No non-finite guard: the caller sanitises the offsets and masks
        (:func:`~dyhead_d2.layers.dyhead.guard_offsets_and_masks`)."""
        return sampled_deform_conv_levels(
            inputs, offsets, masks, self.weight, self.bias, self.stride, self.padding
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, "
            f"deform_impl={self.deform_impl!r}"
        )


class DeformConv(nn.Module):
    """A deformable convolution that owns its weight: Detectron2's ``DeformConv``
    (``modulated=False``) and ``ModulatedDeformConv`` (``modulated=True``), same constructor
    arguments, parameter names and shapes, computed by :func:`modulated_deform_conv`.

    ``weight`` is (C_out, C_in / groups, k, k), ``bias`` (C_out,) when asked; ``norm`` and
    ``activation`` are applied after the convolution, as Detectron2's do, so a norm's parameters
    are ``norm.*`` under this module. The offset (and, modulated, the mask, already through a
    sigmoid) come from the caller: (N, 2 * G * k * k, Ho, Wo) and (N, G * k * k, Ho, Wo) with
    G = ``deformable_groups``. Unlike Detectron2's, whose op is a CUDA kernel of its own, this one
    runs wherever :func:`modulated_deform_conv` does (``deform_impl``: "auto" is the sampled path
    on CPU and torchvision's op elsewhere).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: nn.Module | None = None,
        activation=None,
        *,
        modulated: bool = True,
        deform_impl: str = "auto",
    ):
        super().__init__()
        for what, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups:
                raise ValueError(f"DeformConv: {what}={channels} is not divisible by {groups=}")
        if in_channels % deformable_groups:
            raise ValueError(
                f"DeformConv: in_channels={in_channels} is not divisible by "
                f"deformable_groups={deformable_groups}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.modulated = modulated
        self.deform_impl = check_deform_impl(deform_impl)
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size)
        )
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        # Detectron2's initialisation (its blocks overwrite it with their own).
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    @property
    def offset_channels(self) -> int:
        """Channels of the offset this convolution takes: 2 * G * k * k."""
        return 2 * self.deformable_groups * self.kernel_size**2

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        kk = self.kernel_size**2
        if offset.shape[1] != self.offset_channels:
            raise ValueError(
                f"DeformConv: offset has {offset.shape[1]} channels, expected "
                f"2 * deformable_groups * k * k = {self.offset_channels}"
            )
        if self.modulated != (mask is not None):
            raise ValueError(
                "DeformConv: a modulated convolution needs a mask, an unmodulated one takes none "
                f"(modulated={self.modulated}, mask given: {mask is not None})"
            )
        if mask is not None and mask.shape[1] != self.deformable_groups * kk:
            raise ValueError(
                f"DeformConv: mask has {mask.shape[1]} channels, expected "
                f"deformable_groups * k * k = {self.deformable_groups * kk}"
            )
        x = modulated_deform_conv(
            x,
            offset,
            mask,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            impl=self.deform_impl,
            dilation=self.dilation,
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, deformable_groups={self.deformable_groups}, "
            f"bias={self.bias is not None}, modulated={self.modulated}, "
            f"deform_impl={self.deform_impl!r}"
        )
