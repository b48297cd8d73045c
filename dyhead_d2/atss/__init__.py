"""ATSS detector math in plain PyTorch + torchvision + fvcore (no detectron2 import)."""

from .assign import atss_assign, box_centers
from .losses import atss_losses, reduce_mean_over_workers
from .targets import centerness_targets

__all__ = [
    "atss_assign",
    "atss_losses",
    "box_centers",
    "centerness_targets",
    "reduce_mean_over_workers",
]
