"""The ATSS prediction head: class logits, box deltas and centerness on every pyramid level."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ATSSHead", "Scale"]

# GroupNorm groups of the stacked convolutions, as in the authors' head.
_GN_GROUPS = 32


class Scale(nn.Module):
    """Multiplies its input by one learnable scalar ``scale`` (shape (1,))."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value], dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(in_channels: int, channels: int, num_convs: int, norm: str | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers.append(
            nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=True)
        )
        if norm == "GN":
            layers.append(nn.GroupNorm(_GN_GROUPS, channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ATSSHead(nn.Module):
    """Shared-weight ATSS head applied to each level of a feature pyramid.

    Two towers of ``num_convs`` (3x3 conv, optional GroupNorm, ReLU) blocks feed the predictors:
    the class tower feeds ``cls_logits``; the box tower feeds ``bbox_pred`` (scaled by one
    learnable scalar per level, since levels have different strides) and ``centerness``. With
    ``num_convs = 0`` (DyHead's setting, whose blocks already do this work) the towers are None
    and the predictors read the features directly. Module names follow the authors' port so their
    checkpoints map one to one (Detectron2's RetinaNetHead / FCOSHead name them otherwise and
    have no per-level scale, hence not reused). One anchor per location.

    Args:
        in_channels: channels of every input level.
        num_classes: K, the number of foreground classes.
        num_levels: number of pyramid levels, one ``Scale`` each.
        num_convs: blocks in each tower.
        conv_channels: channels of the tower convolutions.
        pred_kernel_size: kernel size of the three predictors (authors: 1, MMDetection: 3).
        norm: "GN" for GroupNorm(32) after each tower convolution, or None.
        prior_prob: initial foreground probability of every class; sets the class bias so the
            focal loss starts stable.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_levels: int,
        num_convs: int = 0,
        conv_channels: int = 256,
        pred_kernel_size: int = 1,
        norm: str | None = "GN",
        prior_prob: float = 0.01,
    ):
        super().__init__()
        if norm not in (None, "GN"):
            raise ValueError(f"ATSSHead: unknown norm {norm!r}; expected 'GN' or None")
        if num_convs > 0 and norm == "GN" and conv_channels % _GN_GROUPS != 0:
            raise ValueError(
                f"ATSSHead: conv_channels ({conv_channels}) must be divisible by {_GN_GROUPS} "
                "for GroupNorm"
            )
        if pred_kernel_size % 2 != 1:
            raise ValueError(
                f"ATSSHead: pred_kernel_size must be odd to keep the map size, "
                f"got {pred_kernel_size}"
            )
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"ATSSHead: prior_prob must be in (0, 1), got {prior_prob}")
        self.num_classes = num_classes
        self.num_levels = num_levels

        if num_convs > 0:
            self.cls_tower = _tower(in_channels, conv_channels, num_convs, norm)
            self.bbox_tower = _tower(in_channels, conv_channels, num_convs, norm)
            pred_in = conv_channels
        else:
            self.cls_tower = None
            self.bbox_tower = None
            pred_in = in_channels

        pad = pred_kernel_size // 2
        self.cls_logits = nn.Conv2d(pred_in, num_classes, pred_kernel_size, padding=pad)
        self.bbox_pred = nn.Conv2d(pred_in, 4, pred_kernel_size, padding=pad)
        self.centerness = nn.Conv2d(pred_in, 1, pred_kernel_size, padding=pad)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1.0 - prior_prob) / prior_prob))

    def forward(
        self, features: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Levels fine to coarse, each (N, C, H_l, W_l).

        Returns:
            Per level: class logits (N, K, H_l, W_l), box deltas (N, 4, H_l, W_l) and centerness
            logits (N, 1, H_l, W_l).
        """
        if len(features) != self.num_levels:
            raise ValueError(
                f"ATSSHead was built for {self.num_levels} feature levels (one box-delta scale "
                f"each) but got {len(features)}"
            )
        logits, deltas, centerness = [], [], []
        for x, scale in zip(features, self.scales):
            cls_feat = x if self.cls_tower is None else self.cls_tower(x)
            box_feat = x if self.bbox_tower is None else self.bbox_tower(x)
            logits.append(self.cls_logits(cls_feat))
            deltas.append(scale(self.bbox_pred(box_feat)))
            centerness.append(self.centerness(box_feat))
        return logits, deltas, centerness
