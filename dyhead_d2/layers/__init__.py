"""Model math in plain PyTorch + torchvision (no detectron2 import)."""

from .deform_conv import DEFORM_IMPLS, DeformConv, ModulatedDeformConv, modulated_deform_conv
from .dyhead import DeformConvGN, DyHead, DyHeadBlock, ScaleAttention, check_pyramid
from .dyrelu import DyReLU
from .finite import NonFiniteError
from .frozen_stats_bn import FrozenStatsBatchNorm2d
from .grouped_deform_conv import sampled_grouped_deform_conv
from .offset_modes import OFFSET_MODES, read_high_branch_offset
from .ports import INIT_STYLES, PORTS, DyHeadPort, resolve_port
from .sampled_deform_conv import sampled_deform_conv, sampled_deform_conv_levels

__all__ = [
    "DEFORM_IMPLS",
    "DeformConv",
    "DeformConvGN",
    "DyHead",
    "DyHeadBlock",
    "DyHeadPort",
    "DyReLU",
    "FrozenStatsBatchNorm2d",
    "INIT_STYLES",
    "ModulatedDeformConv",
    "NonFiniteError",
    "OFFSET_MODES",
    "PORTS",
    "ScaleAttention",
    "check_pyramid",
    "modulated_deform_conv",
    "read_high_branch_offset",
    "resolve_port",
    "sampled_deform_conv",
    "sampled_deform_conv_levels",
    "sampled_grouped_deform_conv",
]
