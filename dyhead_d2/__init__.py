"""DyHead (Dynamic Head, CVPR 2021) as a Detectron2 project.

The model math (:mod:`dyhead_d2.layers`) needs only PyTorch and torchvision. The Detectron2 layer
(backbone wrapper, ATSS meta-architecture, configs) needs detectron2, which is imported only when
one of its names is used.
"""

from .layers import DyHead, DyHeadBlock, DyReLU

__version__ = "0.1.0"

__all__ = ["DyHead", "DyHeadBlock", "DyReLU", "__version__"]
