"""FPN top blocks that Detectron2 does not provide."""

from __future__ import annotations

from detectron2.modeling.backbone.fpn import LastLevelP6P7
from torch import Tensor

__all__ = ["LastLevelP6P7NoReLU"]


class LastLevelP6P7NoReLU(LastLevelP6P7):
    """P6 = conv(P5), P7 = conv(P6), without the ReLU that Detectron2's ``LastLevelP6P7`` applies
    to P6 before P7: MMDetection's FPN with ``add_extra_convs="on_output"`` (its default
    ``relu_before_extra_convs=False``), which its released DyHead weights were trained with."""

    def forward(self, x: Tensor) -> list[Tensor]:
        p6 = self.p6(x)
        return [p6, self.p7(p6)]
