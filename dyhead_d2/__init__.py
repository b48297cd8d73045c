"""DyHead (Dynamic Head, CVPR 2021) as a Detectron2 project.

The model math (:mod:`dyhead_d2.layers`, :mod:`dyhead_d2.atss`) needs only PyTorch and
torchvision. The Detectron2 layer (:mod:`dyhead_d2.modeling`: backbone wrapper, ATSS
meta-architecture) needs detectron2 and is imported only when one of its names is used, e.g.
``dyhead_d2.ATSS``; without detectron2 that raises an ImportError saying how to install it.
:class:`Predictor` runs a config's model on images (needs detectron2);
:mod:`dyhead_d2.deploy` exports models to ONNX and runs them with onnxruntime alone. Every name
is imported when first used, so ``dyhead_d2.deploy.OnnxPredictor`` loads neither torch nor
detectron2.
"""

__version__ = "0.1.0"

_TORCH_NAMES = {
    "DyHead": "layers",
    "DyHeadBlock": "layers",
    "DyHeadPort": "layers",
    "DyReLU": "layers",
}
_DETECTRON2_NAMES = {
    "ATSS": "modeling",
    "DyHeadBackbone": "modeling",
    "Predictor": "inference",
}
_LAZY = {**_TORCH_NAMES, **_DETECTRON2_NAMES}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
