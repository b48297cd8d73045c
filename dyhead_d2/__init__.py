"""DyHead (Dynamic Head, CVPR 2021) as a Detectron2 project.

The model math (:mod:`dyhead_d2.layers`, :mod:`dyhead_d2.atss`) needs only PyTorch and
torchvision. The Detectron2 layer (:mod:`dyhead_d2.modeling`: backbone wrapper, ATSS
meta-architecture) needs detectron2 and is imported only when one of its names is used, e.g.
``dyhead_d2.ATSS``; without detectron2 that raises an ImportError saying how to install it.
"""

from .layers import DyHead, DyHeadBlock, DyReLU

__version__ = "0.1.0"

_DETECTRON2_NAMES = {"ATSS": "modeling", "DyHeadBackbone": "modeling"}

__all__ = ["DyHead", "DyHeadBlock", "DyReLU", "__version__", *_DETECTRON2_NAMES]


def __getattr__(name: str):
    if name in _DETECTRON2_NAMES:
        import importlib

        module = importlib.import_module(f".{_DETECTRON2_NAMES[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
