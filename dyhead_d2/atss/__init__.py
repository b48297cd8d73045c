"""ATSS detector math in plain PyTorch + torchvision + fvcore (no detectron2 import)."""

from .assign import atss_assign, box_centers

__all__ = ["atss_assign", "box_centers"]
