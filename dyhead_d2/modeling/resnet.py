"""Deformable ResNet / ResNeXt stages for Detectron2's ``ResNet`` that need no custom build.

Detectron2's ``DeformBottleneckBlock`` computes its 3x3 deformable convolution with a CUDA kernel
of its own: its modulated convolution raises "not supported on CPUs", and without a CUDA build
Detectron2 has none. :class:`DeformBottleneckBlock` here is the same block (same constructor,
parameter names and shapes, initialisation and forward) whose convolution is
:class:`~dyhead_d2.layers.DeformConv`: torchvision's op on GPU, the sampled path on CPU, ONNX
``DeformConv`` on export. Checkpoints of Detectron2's block (and Detectron's, converted by
Detectron2's loader) load into it unchanged.

:func:`make_resnet_stages` builds a ResNet's stages from the options of Detectron2's
``build_resnet_backbone`` (``MODEL.RESNETS.*``), deformable convolutions chosen per stage, as a
LazyCall-able function for ``ResNet(stages=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet
from torch import Tensor, nn

from ..layers import DeformConv

__all__ = ["DeformBottleneckBlock", "make_resnet_stages"]


class DeformBottleneckBlock(CNNBlockBase):
    """Detectron2's ``DeformBottleneckBlock``: a bottleneck block (1x1, 3x3, 1x1) whose 3x3
    convolution is deformable, its offsets (and mask) predicted by a 3x3 convolution
    ``conv2_offset`` (with bias, zero-initialised) on the 1x1 convolution's output.

    Parameters, as in Detectron2: ``conv1``, ``conv2`` (the deformable convolution's ``weight``,
    no bias, and ``norm``), ``conv2_offset`` (``weight``, ``bias``), ``conv3``, ``shortcut``.
    ``conv2_offset`` outputs 27 * ``deform_num_groups`` channels when modulated, 18 * G otherwise.
    Modulated, the first 18 * G are the offsets and the last 9 * G, through a sigmoid, the mask:
    Detectron2 chunks the output into three equal parts and concatenates the first two, which is
    that split. Per offset group, the offsets are (dy, dx) pairs per kernel tap, the layout both
    Detectron2's kernel and torchvision's read.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str | nn.Module = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
        deform_impl: str = "auto",
    ):
        """
        Args:
            bottleneck_channels: output channels of the 1x1 and the 3x3 convolution.
            num_groups: groups of the 3x3 convolution (ResNeXt's cardinality).
            norm: normalisation after every convolution; see ``detectron2.layers.get_norm``.
            stride_in_1x1: put the stride in the first 1x1 convolution (MSRA's caffe ResNets)
                instead of the 3x3 (torchvision's and Caffe2's ResNeXts).
            dilation: of the 3x3 convolution.
            deform_modulated: DCNv2 (a mask modulates every sample) instead of DCNv1.
            deform_num_groups: offset groups: input channels split into this many groups, each
                with its own offsets (and mask).
            deform_impl: the deformable convolution's implementation ("auto", "torchvision",
                "sampled"; :func:`~dyhead_d2.layers.modulated_deform_conv`): the same function.
        """
        super().__init__(in_channels, out_channels, stride)
        self.deform_modulated = deform_modulated

        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=get_norm(norm, out_channels),
            )
        else:
            self.shortcut = None

        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)

        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        offset_channels = (27 if deform_modulated else 18) * deform_num_groups
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            offset_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
        )
        self.conv2 = DeformConv(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
            deformable_groups=deform_num_groups,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
            modulated=deform_modulated,
            deform_impl=deform_impl,
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )

        for layer in [self.conv1, self.conv2, self.conv3, self.shortcut]:
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        # Zero offsets and a mask of 0.5 at first: a plain 3x3 convolution, halved if modulated.
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""
        out = F.relu_(self.conv1(x))
        if self.deform_modulated:
            offset_mask = self.conv2_offset(out)
            # Detectron2: chunk(3) along channels, then cat of the first two chunks.
            split = self.conv2.offset_channels
            offset = offset_mask[:, :split]
            mask = offset_mask[:, split:].sigmoid()
            out = self.conv2(out, offset, mask)
        else:
            out = self.conv2(out, self.conv2_offset(out))
        out = F.relu_(out)
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


# Detectron2's build_resnet_backbone: blocks per stage (res2..res5) for each depth.
_BLOCKS_PER_STAGE = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def make_resnet_stages(
    depth: int,
    *,
    num_groups: int = 1,
    width_per_group: int = 64,
    stem_out_channels: int = 64,
    res2_out_channels: int = 256,
    stride_in_1x1: bool = True,
    res5_dilation: int = 1,
    norm: str | nn.Module = "FrozenBN",
    deform_on_per_stage: Sequence[bool] = (False, False, False, False),
    deform_modulated: bool = False,
    deform_num_groups: int = 1,
    deform_impl: str = "auto",
) -> list[list[CNNBlockBase]]:
    """The four stages (res2..res5) Detectron2's ``build_resnet_backbone`` builds from the same
    options (``MODEL.RESNETS.DEPTH``, ``NUM_GROUPS``, ``WIDTH_PER_GROUP``, ...; defaults are
    Detectron2's), for ``ResNet(stem, stages, ...)``. Stages with ``deform_on_per_stage[i]``
    use :class:`DeformBottleneckBlock` (with ``deform_modulated``, ``deform_num_groups`` and
    ``deform_impl``), the others Detectron2's ``BottleneckBlock`` (``BasicBlock`` for depth 18
    and 34). ResNeXt-101 64x4d: ``depth=101, num_groups=64, width_per_group=4,
    stride_in_1x1=False``. The parameter names are those of the ResNet Detectron2 would build.
    """
    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(
            f"make_resnet_stages: depth={depth} is not one of {sorted(_BLOCKS_PER_STAGE)}"
        )
    deform_on_per_stage = [bool(d) for d in deform_on_per_stage]
    if len(deform_on_per_stage) != 4:
        raise ValueError(
            f"make_resnet_stages: deform_on_per_stage needs one entry per stage res2..res5, got "
            f"{deform_on_per_stage}"
        )
    if res5_dilation not in (1, 2):
        raise ValueError(f"make_resnet_stages: res5_dilation={res5_dilation} is not 1 or 2")
    if depth in (18, 34):
        unsupported = {
            "res2_out_channels": res2_out_channels != 64,
            "deform_on_per_stage": any(deform_on_per_stage),
            "res5_dilation": res5_dilation != 1,
            "num_groups": num_groups != 1,
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ValueError(
                f"make_resnet_stages: depth {depth} (BasicBlock) needs res2_out_channels=64, no "
                f"deformable stage, res5_dilation=1 and num_groups=1; got other {', '.join(bad)}"
            )
    bottleneck_channels = num_groups * width_per_group
    in_channels, out_channels = stem_out_channels, res2_out_channels
    stages = []
    for idx, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth]):
        dilation = res5_dilation if idx == 3 else 1
        first_stride = 1 if idx == 0 or (idx == 3 and dilation == 2) else 2
        kwargs = dict(
            num_blocks=num_blocks,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1),
            in_channels=in_channels,
            out_channels=out_channels,
            norm=norm,
        )
        if depth in (18, 34):
            kwargs["block_class"] = BasicBlock
        else:
            kwargs.update(
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=stride_in_1x1,
                dilation=dilation,
                num_groups=num_groups,
            )
            if deform_on_per_stage[idx]:
                kwargs.update(
                    block_class=DeformBottleneckBlock,
                    deform_modulated=deform_modulated,
                    deform_num_groups=deform_num_groups,
                    deform_impl=deform_impl,
                )
            else:
                kwargs["block_class"] = BottleneckBlock
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return stages
