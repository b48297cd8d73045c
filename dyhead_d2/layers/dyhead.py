"""The DyHead neck: blocks of scale-, spatial- and task-aware attention over a feature pyramid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .deform_conv import ModulatedDeformConv, resolve_deform_impl
from .dyrelu import DyReLU
from .finite import NonFiniteError, describe_non_finite, find_non_finite
from .offset_modes import read_high_branch_offset
from .ports import DyHeadPort, resolve_port

__all__ = [
    "DyHead",
    "DyHeadBlock",
    "ScaleAttention",
    "DeformConvGN",
    "check_pyramid",
    "guard_offsets_and_masks",
    "split_offset_and_mask",
]

# Offset and mask of a 3x3 DCNv2 with one deformable group: 9 (dy, dx) pairs + 9 modulation scalars.
_OFFSET_CHANNELS = 18
_MASK_CHANNELS = 9


def split_offset_and_mask(out: Tensor) -> tuple[Tensor, Tensor]:
    """offset_conv's (N, 27, H, W) output -> offsets (N, 18, H, W), sigmoid masks (N, 9, H, W)."""
    return out[:, :_OFFSET_CHANNELS], out[:, _OFFSET_CHANNELS:].sigmoid()


def guard_offsets_and_masks(raw: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """offset_conv's output on every level -> offsets, masks and the (L,) bool "level l's are
    finite", with no host read (one reduction per level).

    Unchanged when every value is finite. Otherwise every offset becomes 0 and every mask NaN:
    nothing samples out of bounds and every output of the deformable convolutions is NaN. The
    raw predictions are checked, not the sigmoid masks: an Inf mask logit is a finite mask.
    """
    finite = torch.stack([torch.isfinite(r).all() for r in raw])
    all_finite = finite.all()
    offsets, masks = [], []
    for r in raw:
        offset, mask = split_offset_and_mask(r)
        offsets.append(torch.where(all_finite, offset, 0.0))
        masks.append(torch.where(all_finite, mask, float("nan")))
    return offsets, masks, finite


class DeformConvGN(nn.Module):
    """Modulated deformable 3x3 convolution followed by GroupNorm."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        bias: bool,
        norm_groups: int,
        deform_impl: str = "auto",
    ):
        super().__init__()
        self.conv = ModulatedDeformConv(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=1,
            bias=bias,
            deform_impl=deform_impl,
        )
        self.norm = nn.GroupNorm(norm_groups, out_channels)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return self.norm(self.conv(x, offset, mask))


class ScaleAttention(nn.Module):
    """Scale-aware attention: one weight in [0.5, 1] per image, from the globally pooled feature."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 1, 1, 1)."""
        # The 1x1 convolution of the pooled (N, C, 1, 1) map is computed as the matrix product it
        # is (same weight and bias): a convolution call costs more than the product here.
        # F.hardsigmoid is ReLU6(x + 3) / 6, the "h_sigmoid" of both DyHead ports.
        logit = F.linear(x.mean(dim=(2, 3)), self.conv.weight.flatten(1), self.conv.bias)
        return F.hardsigmoid(F.relu(logit)).view(-1, 1, 1, 1)


def check_pyramid(features: Sequence[Tensor], channels: int, owner: str = "DyHead") -> None:
    """Raise a ValueError naming the offending level unless ``features`` is a valid pyramid.

    A valid pyramid is a non-empty list of (N, channels, H_l, W_l) tensors with one batch size in
    which every level is what a stride-2, padding-1 3x3 convolution makes of the previous one:
    ``H_l = ceil(H_{l-1} / 2)`` (so 13x19 -> 7x10).
    """
    if not isinstance(features, (list, tuple)):
        raise TypeError(
            f"{owner} expects a list of (N, C, H, W) tensors, got {type(features).__name__}"
        )
    if len(features) == 0:
        raise ValueError(f"{owner} got an empty list of feature levels; it needs at least one")
    for level, f in enumerate(features):
        if f.dim() != 4:
            raise ValueError(
                f"{owner}: level {level} has shape {tuple(f.shape)}; expected (N, C, H, W)"
            )
        if f.shape[1] != channels:
            raise ValueError(
                f"{owner}: level {level} has {f.shape[1]} channels; expected {channels} "
                f"(shape {tuple(f.shape)})"
            )
        if f.shape[0] != features[0].shape[0]:
            raise ValueError(
                f"{owner}: level {level} has batch size {f.shape[0]} "
                f"but level 0 has {features[0].shape[0]}"
            )
        if level > 0:
            ph, pw = features[level - 1].shape[-2:]
            want = ((ph + 1) // 2, (pw + 1) // 2)
            if tuple(f.shape[-2:]) != want:
                raise ValueError(
                    f"{owner}: level {level} is {f.shape[-2]}x{f.shape[-1]} but level "
                    f"{level - 1} is {ph}x{pw}, so level {level} must be {want[0]}x{want[1]} "
                    "(each level half the size of the previous one, rounded up)"
                )


class DyHeadBlock(nn.Module):
    """One DyHead block (scale-, spatial- and task-aware attention) applied to every level.

    For level ``l`` an offset/mask is predicted from ``x[l]`` and shared by three modulated
    deformable convolutions: ``mid`` on ``x[l]``, ``low`` (stride 2) on ``x[l-1]`` and ``high`` on
    ``x[l+1]``, whose output is bilinearly upsampled (align_corners=True) to ``x[l]``'s size. Each
    branch is weighted by :class:`ScaleAttention`, the branches are averaged and :class:`DyReLU` is
    applied. The three convolutions, the attention and DyReLU are shared by all levels.

    Args:
        in_channels, out_channels: channels of the input and output levels.
        port: the port's choices: a name in :data:`~dyhead_d2.layers.ports.PORTS` ("authors",
            "mmdet_repro", "mmdet_simple", "new_training") or a
            :class:`~dyhead_d2.layers.ports.DyHeadPort`.
        offset_mode, dcn_bias, zero_init_offset, init_style: each replaces the port's value when
            given; without ``port`` all four are required (see :class:`DyHeadPort`).
        norm_groups: GroupNorm groups after each deformable convolution.
        deform_impl: which modulated deformable convolution runs: ``"torchvision"``
            (``torchvision.ops.deform_conv2d``), ``"sampled"`` (gathers + matrix multiplies in
            plain PyTorch, see :mod:`dyhead_d2.layers.sampled_deform_conv`) or ``"auto"``
            (default: ``"sampled"`` on CPU, ``"torchvision"`` on other devices). Both compute the
            same function; results agree to float rounding (outputs and gradients, about 1e-6
            relative), which is why the default may differ per device. It changes no parameter.
            The sampled path returns channels-last tensors (same shapes and values).

    ``forward`` first predicts every level's offsets and masks and checks them without a host
    read (one reduction per level): when any value is NaN or Inf, every offset of the block
    becomes 0 and every mask NaN, so nothing samples out of bounds (torchvision's op would read
    out of bounds at a NaN offset) and every output value is NaN. Called alone, the block then
    reads the check (one device synchronisation) and raises
    :class:`~dyhead_d2.layers.finite.NonFiniteError` naming the levels, whether the block's
    input was finite, and the block's first non-finite parameter (:meth:`describe_non_finite`);
    inside :class:`DyHead` it hands the check to the tower, which reads all blocks' at once. It
    then runs :meth:`forward_per_level` (the algorithm as written: per level, per branch) when
    the resolved implementation is ``"torchvision"``, and :meth:`forward_sampled` (each
    convolution once over all levels) when it is ``"sampled"``. Under autocast the former runs
    the deformable convolutions in float32; the latter computes sampling positions and bilinear
    weights in float32 and its matrix products and gathers in the autocast dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        port: str | DyHeadPort | None = None,
        offset_mode: str | None = None,
        dcn_bias: bool | None = None,
        zero_init_offset: bool | None = None,
        init_style: str | None = None,
        norm_groups: int = 16,
        deform_impl: str = "auto",
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.port = resolve_port(
            port,
            owner=type(self).__name__,
            offset_mode=offset_mode,
            dcn_bias=dcn_bias,
            zero_init_offset=zero_init_offset,
            init_style=init_style,
        )
        self.deform_impl = deform_impl  # checked by the ModulatedDeformConvs below
        if out_channels % norm_groups != 0:
            raise ValueError(
                f"DyHeadBlock: out_channels ({out_channels}) must be divisible by "
                f"norm_groups ({norm_groups})"
            )
        self.offset_conv = nn.Conv2d(in_channels, _OFFSET_CHANNELS + _MASK_CHANNELS, 3, padding=1)
        branch_args = (self.port.dcn_bias, norm_groups, deform_impl)
        self.conv_high = DeformConvGN(in_channels, out_channels, 1, *branch_args)
        self.conv_mid = DeformConvGN(in_channels, out_channels, 1, *branch_args)
        self.conv_low = DeformConvGN(in_channels, out_channels, 2, *branch_args)
        self.scale_attn = ScaleAttention(out_channels)
        self.task_attn = DyReLU(out_channels)
        self._init_weights()

    @property
    def offset_mode(self) -> str:
        """How the high branch reads the finer level's offset and mask (``port.offset_mode``)."""
        return self.port.offset_mode

    def _init_weights(self) -> None:
        normal_init = [self.scale_attn.conv]
        if self.port.init_style == "mmdet":
            normal_init += [self.offset_conv, self.task_attn.fc1, self.task_attn.fc2]
        for m in normal_init:
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        if self.port.zero_init_offset:
            nn.init.zeros_(self.offset_conv.weight)
            nn.init.zeros_(self.offset_conv.bias)

    def offset_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Offsets (N, 18, H, W) and sigmoid masks (N, 9, H, W) predicted from one level."""
        return split_offset_and_mask(self.offset_conv(x))

    def forward(
        self, features: Sequence[Tensor], checks: list[Tensor] | None = None
    ) -> list[Tensor]:
        """Levels fine to coarse, (N, in_channels, H_l, W_l) -> (N, out_channels, H_l, W_l).

        ``checks``: where the check goes. None (default): read it now and raise
        :class:`~dyhead_d2.layers.finite.NonFiniteError` if an offset or mask was not finite. A
        list: append the (L,) bool tensor "level l's offsets and masks were finite" to it, on the
        device, unread (what :class:`DyHead` does).
        """
        check_pyramid(features, self.in_channels, type(self).__name__)
        offsets, masks, finite = guard_offsets_and_masks([self.offset_conv(x) for x in features])
        if resolve_deform_impl(self.deform_impl, features[0].device) == "torchvision":
            outputs = self.forward_per_level(features, offsets, masks)
        else:
            outputs = self.forward_sampled(features, offsets, masks)
        if checks is not None:
            checks.append(finite)
        elif not torch.jit.is_tracing() and not bool(finite.all()):
            raise NonFiniteError(self.describe_non_finite(features))
        return outputs

    @torch.no_grad()
    def describe_non_finite(self, features: Sequence[Tensor]) -> str:
        """Why this block's offsets/masks on ``features`` are not finite, in one line: the levels
        (with counts), then whether its input was finite and, if so, its first non-finite
        parameter. Recomputes ``offset_conv`` (the error path only)."""
        raw = [self.offset_conv(x) for x in features]
        bad = [
            f"level {i} ({describe_non_finite(r)})"
            for i, r in enumerate(raw)
            if not bool(torch.isfinite(r).all())
        ]
        where = ", ".join(bad) if bad else "no level when recomputed"
        msg = f"the offsets/masks predicted by offset_conv are not finite on {where}"
        bad_input = find_non_finite(list(features), "level")
        if bad_input is not None:
            return f"{msg}; the block's input is not finite either ({' holds '.join(bad_input)})"
        bad_param = find_non_finite(dict(self.named_parameters()))
        if bad_param is not None:
            return f"{msg}; its input is finite, but parameter {' holds '.join(bad_param)}"
        return f"{msg}; its input and parameters are finite (offset_conv overflowed)"

    def forward_per_level(
        self,
        features: Sequence[Tensor],
        offsets: Sequence[Tensor] | None = None,
        masks: Sequence[Tensor] | None = None,
    ) -> list[Tensor]:
        """The block as the authors wrote it: one level and one branch at a time.

        Each deformable convolution uses this block's ``deform_impl``; with ``"torchvision"``
        this is the reference :meth:`forward_sampled` is checked and benchmarked against.
        ``offsets`` and ``masks`` are :meth:`offset_and_mask` of every level, computed here when
        not given.
        """
        if offsets is None or masks is None:
            offsets, masks = zip(*(self.offset_and_mask(x) for x in features))
        outputs = []
        for level, x in enumerate(features):
            offset, mask = offsets[level], masks[level]
            mid = self.conv_mid(x, offset, mask)
            low = high = None
            if level > 0:
                low = self.conv_low(features[level - 1], offset, mask)
            if level < len(features) - 1:
                coarser = features[level + 1]
                size = (coarser.shape[-2], coarser.shape[-1])
                high = self.conv_high(
                    coarser,
                    read_high_branch_offset(offset, size, self.offset_mode),
                    read_high_branch_offset(mask, size, self.offset_mode, is_mask=True),
                )
            outputs.append(self.fuse_branches(mid, low, high))
        return outputs

    def forward_sampled(
        self,
        features: Sequence[Tensor],
        offsets: Sequence[Tensor] | None = None,
        masks: Sequence[Tensor] | None = None,
    ) -> list[Tensor]:
        """The block with the ``"sampled"`` implementation: the same function as
        :meth:`forward_per_level`, but each of the three deformable convolutions runs once over
        all levels (their weights are shared by the levels; see :meth:`sampled_branches`).

        ``features`` must be a valid pyramid (see :func:`check_pyramid`); ``offsets`` and
        ``masks`` are :meth:`offset_and_mask` of every level, computed here when not given.
        """
        if offsets is None or masks is None:
            offsets, masks = zip(*(self.offset_and_mask(x) for x in features))
        return self.fuse_levels(*self.sampled_branches(features, offsets, masks))

    def sampled_branches(
        self, features: Sequence[Tensor], offsets: Sequence[Tensor], masks: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor | None], list[Tensor | None]]:
        """The three deformable convolutions of every level, before normalisation.

        ``mid`` runs on all levels, ``high`` on levels 1.. with the finer level's offset/mask
        read at that size, ``low`` (stride 2) on levels ..L-2 with the coarser level's; each is
        one :meth:`~dyhead_d2.layers.deform_conv.ModulatedDeformConv.forward_levels` call.
        Returns per level ``mid``, ``low`` (None on level 0) and ``high`` (None on the last
        level; at the coarser level's size, not yet upsampled), each (N, C_out, h, w) in
        channels-last memory.
        """
        mids = self.conv_mid.conv.forward_levels(features, offsets, masks)
        if len(features) == 1:
            return mids, [None], [None]
        sizes = [(f.shape[-2], f.shape[-1]) for f in features[1:]]
        mode = self.offset_mode
        high_offsets = [read_high_branch_offset(o, s, mode) for o, s in zip(offsets, sizes)]
        high_masks = [
            read_high_branch_offset(m, s, mode, is_mask=True) for m, s in zip(masks, sizes)
        ]
        highs = self.conv_high.conv.forward_levels(features[1:], high_offsets, high_masks)
        lows = self.conv_low.conv.forward_levels(features[:-1], offsets[1:], masks[1:])
        return mids, [None, *lows], [*highs, None]

    def fuse_levels(
        self,
        mids: Sequence[Tensor],
        lows: Sequence[Tensor | None],
        highs: Sequence[Tensor | None],
    ) -> list[Tensor]:
        """Every level's output from its raw branch outputs (as :meth:`sampled_branches` returns
        them): each branch's GroupNorm, then :meth:`fuse_branches`."""
        outputs = []
        for mid, low, high in zip(mids, lows, highs):
            low = None if low is None else self.conv_low.norm(low)
            high = None if high is None else self.conv_high.norm(high)
            outputs.append(self.fuse_branches(self.conv_mid.norm(mid), low, high))
        return outputs

    def fuse_branches(self, mid: Tensor, low: Tensor | None, high: Tensor | None) -> Tensor:
        """One level's output from its normalised branch outputs: ``high`` (at the coarser
        level's size) upsampled to ``mid``'s size, each branch weighted by the scale attention,
        their mean, then DyReLU. Shared by both forward paths, so they fuse alike."""
        branches = [mid]
        if low is not None:
            branches.append(low)
        if high is not None:
            branches.append(
                F.interpolate(high, size=mid.shape[-2:], mode="bilinear", align_corners=True)
            )
        # The mean of the weighted branches, with the 1/n in the (N, 1, 1, 1) weights and each
        # further branch added by addcmul: one pass over the level per branch.
        n = len(branches)
        fused = branches[0] * (self.scale_attn(branches[0]) / n)
        for b in branches[1:]:
            fused = torch.addcmul(fused, b, self.scale_attn(b) / n)
        return self.task_attn(fused)


class DyHead(nn.Module):
    """A stack of :class:`DyHeadBlock` applied to a feature pyramid.

    Takes the pyramid as a list of (N, in_channels, H_l, W_l) tensors ordered fine to coarse (any
    number of levels >= 1; each level half the previous one, rounded up) and returns a list of
    (N, out_channels, H_l, W_l) tensors. The keyword arguments are those of :class:`DyHeadBlock`.
    The port has no default on purpose: each port made different choices and a config must say
    which one it reproduces, by name (``port="authors"``, see
    :data:`~dyhead_d2.layers.ports.PORTS`) or with all four options; an option given with a port
    replaces that port's value. It is resolved once, here, and every block gets the result.
    ``deform_impl`` (default ``"auto"``) only picks how the deformable convolutions are computed;
    see :class:`DyHeadBlock`.

    NaN or Inf offsets or masks: each block sanitises its own without a host read (see
    :class:`DyHeadBlock`) and records a device-side flag per level; ``forward`` reads all
    blocks' flags once at its end (one device synchronisation per call, not one per block) and
    raises :class:`~dyhead_d2.layers.finite.NonFiniteError` naming the first block that saw
    one, its levels, whether its input was finite and its first non-finite parameter. With
    ``check_in_forward = False`` the read is left to the caller (the ATSS detector reads it
    with its number of positive anchors: one host read per training step). In distributed
    training the flags are all-reduced (no host read) in ``forward``, so every rank raises the
    same error in the same step instead of waiting for a rank that stopped; every rank must
    then run the tower once per step, as Detectron2's training does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int = 6,
        *,
        port: str | DyHeadPort | None = None,
        offset_mode: str | None = None,
        dcn_bias: bool | None = None,
        zero_init_offset: bool | None = None,
        init_style: str | None = None,
        norm_groups: int = 16,
        deform_impl: str = "auto",
    ):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"DyHead needs num_blocks >= 1, got {num_blocks}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.port = resolve_port(
            port,
            owner=type(self).__name__,
            offset_mode=offset_mode,
            dcn_bias=dcn_bias,
            zero_init_offset=zero_init_offset,
            init_style=init_style,
        )
        self.deform_impl = deform_impl  # checked by the blocks' ModulatedDeformConvs
        self.blocks = nn.ModuleList(
            DyHeadBlock(
                in_channels if i == 0 else out_channels,
                out_channels,
                port=self.port,
                norm_groups=norm_groups,
                deform_impl=deform_impl,
            )
            for i in range(num_blocks)
        )
        #: Read the blocks' finite check at the end of forward (one host read per call). A caller
        #: that reads it with its own values (:meth:`pending_check`) sets this to False while it
        #: runs the tower, and must then call :meth:`raise_if_non_finite`.
        self.check_in_forward = True
        self._pending: _PendingCheck | None = None

    @property
    def offset_mode(self) -> str:
        """How the blocks' high branches read the offset and mask (``port.offset_mode``)."""
        return self.port.offset_mode

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Levels fine to coarse -> the last block's levels; see the class docstring for the
        finite check."""
        out = list(features)
        checks: list[Tensor] = []
        for block in self.blocks:
            out = block(out, checks=checks)
        if torch.jit.is_tracing():  # an exported graph keeps the blocks' sanitising only
            return out
        # Ranks agree only in training, where every rank runs one forward per step.
        world = _world_flags(checks) if self.training else None
        self._pending = _PendingCheck(torch.stack(checks), list(features), world)
        if self.check_in_forward:
            self.raise_if_non_finite()
        return out

    def pending_check(self) -> Tensor | None:
        """The unread check of the last forward, as an int64 vector on the device, or None.

        A caller that reads values of its own every step (e.g. the detector's number of positive
        anchors) reads this in the same host read and hands the result to
        :meth:`raise_if_non_finite`, with ``check_in_forward = False``.
        """
        if self._pending is None:
            return None
        flags = (~self._pending.finite).flatten().long()
        world = self._pending.world
        return flags if world is None else torch.cat([flags, world])

    def raise_if_non_finite(self, values: Sequence[int] | None = None) -> None:
        """Raise :class:`~dyhead_d2.layers.finite.NonFiniteError` if an offset or mask of the
        last forward was not finite; ``values``: :meth:`pending_check` as read by the caller
        (read here when None). The message names the first such block and its levels, whether
        its input was finite and its first non-finite parameter; when distributed, the first
        rank where it happened, the same message on every rank."""
        if values is None and self._pending is not None:
            values = self.pending_check().tolist()
        pending, self._pending = self._pending, None
        if pending is None:
            return
        num_blocks, num_levels = pending.finite.shape
        bad = [list(values[b * num_levels : (b + 1) * num_levels]) for b in range(num_blocks)]
        world = list(values[num_blocks * num_levels :])
        if not world:
            if any(any(row) for row in bad):
                raise NonFiniteError(self._describe(bad, pending.features))
            return
        if not any(world):
            return
        # Every rank got the same flags, so every rank is here: the first rank that saw a
        # non-finite value describes it, and all raise the same error (none waits for another
        # in a collective that will never come).
        source = next(r for r, flag in enumerate(world) if flag)
        message = [None]
        if dist.get_rank() == source:
            message[0] = self._describe(bad, pending.features, rank=(source, len(world)))
        dist.broadcast_object_list(message, src=source)
        raise NonFiniteError(message[0])

    def _describe(
        self, bad: list[list[int]], features: list[Tensor], rank: tuple[int, int] | None = None
    ) -> str:
        i = next(b for b, row in enumerate(bad) if any(row))
        # Block i's input, recomputed from the tower's: blocks 0..i-1 had finite offsets.
        with torch.no_grad():
            x = features
            for block in self.blocks[:i]:
                x = block(x, checks=[])
        msg = self.blocks[i].describe_non_finite(x)
        # Say which block; parameter names as in this module's state dict.
        msg = msg.replace("but parameter ", f"but parameter blocks.{i}.")
        where = (
            f"DyHead block {i}"
            if rank is None
            else f"DyHead block {i} on rank {rank[0]} of {rank[1]}"
        )
        return f"{where}: {msg}"


class _PendingCheck(NamedTuple):
    """What :meth:`DyHead.forward` leaves for :meth:`DyHead.raise_if_non_finite`."""

    finite: Tensor  # (blocks, levels) bool: the offsets and masks were finite
    features: list[Tensor]  # the tower's input, to recompute a block's input on the error path
    world: Tensor | None  # (world size,) int64: ranks that saw a non-finite value; None alone


def _world_flags(checks: list[Tensor]) -> Tensor | None:
    """When distributed: a (world size,) vector, all-reduced (no host read), whose entry r is 1
    if rank r saw a non-finite offset or mask in this forward. None otherwise."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    world = torch.zeros(dist.get_world_size(), dtype=torch.int64, device=checks[0].device)
    world[dist.get_rank()] = (~torch.stack(checks)).any().long()
    dist.all_reduce(world)
    return world
