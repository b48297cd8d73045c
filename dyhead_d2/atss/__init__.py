"""ATSS detector math in plain PyTorch + torchvision (no detectron2 or fvcore import).

The Detectron2 meta-architecture calls these: :func:`atss_assign` to label anchors,
:func:`centerness_targets` and :func:`atss_losses` for training, :func:`select_topk_candidates`
for inference, and :class:`ATSSHead` for the predictions.
"""

from .assign import atss_assign, box_centers
from .head import ATSSHead, Scale
from .inference import TOPK_BY, select_topk_candidates
from .losses import atss_losses, reduce_mean_over_workers
from .targets import centerness_targets

__all__ = [
    "ATSSHead",
    "Scale",
    "TOPK_BY",
    "atss_assign",
    "atss_losses",
    "box_centers",
    "centerness_targets",
    "reduce_mean_over_workers",
    "select_topk_candidates",
]
