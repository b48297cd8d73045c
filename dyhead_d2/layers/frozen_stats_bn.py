"""BatchNorm with frozen statistics but a trainable affine transform."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FrozenStatsBatchNorm2d"]


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """Normalises with the running (pretrained) statistics, always, while weight and bias train.

    This is MMDetection's ``BN`` with ``requires_grad=True, norm_eval=True`` used by its "simple"
    DyHead setting; Detectron2's ``FrozenBN`` also freezes the affine part. Stages a Detectron2
    ResNet freezes (``freeze_at``) are still converted to ``FrozenBN``, as MMDetection's
    ``frozen_stages`` does.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )
