"""The Detectron2 layer: DyHead backbone wrapper, ATSS meta-architecture and deformable ResNet
stages (needs detectron2)."""

from .._detectron2 import require_detectron2

require_detectron2("dyhead_d2.modeling")

from .atss import ATSS  # noqa: E402
from .backbone import DyHeadBackbone  # noqa: E402
from .fold_batchnorm import (  # noqa: E402
    fold_frozen_batchnorm,
    folded_for_inference,
    has_foldable_batchnorm,
)
from .resnet import DeformBottleneckBlock, make_resnet_stages  # noqa: E402
from .top_block import LastLevelP6P7NoReLU  # noqa: E402

__all__ = [
    "ATSS",
    "DeformBottleneckBlock",
    "DyHeadBackbone",
    "LastLevelP6P7NoReLU",
    "fold_frozen_batchnorm",
    "folded_for_inference",
    "has_foldable_batchnorm",
    "make_resnet_stages",
]
