"""Deployment: ONNX export (needs torch and detectron2) and an onnxruntime predictor (needs only
onnxruntime, numpy and Pillow: importing it loads neither torch nor detectron2).

* :class:`OnnxPredictor`, :class:`Detections`: run an exported ``model.onnx`` on images;
  :func:`paste_masks`: a mask model's per-detection masks into image-sized binary masks.
* :func:`export_onnx`, :class:`ExportError`, :func:`describe_onnx`: write a config's model as
  ONNX (``tools/export_model.py``).
* :class:`OnnxModel`: an exported model behind :class:`~dyhead_d2.inference.Predictor`'s
  interface (Detectron2 ``Instances`` out; ``tools/demo.py --onnx``).

The last two import torch and detectron2, only when one of their names is used.
"""

from .masks import paste_masks
from .metadata import MASK_OUTPUT, METADATA_KEYS, OUTPUT_NAMES
from .onnx_predictor import Detections, OnnxPredictor

# Names whose modules import torch and detectron2: imported when first used.
_LAZY = {
    "ExportError": "export",
    "ExportedDetector": "export",
    "describe_onnx": "export",
    "export_onnx": "export",
    "OnnxModel": "onnx_model",
}

__all__ = [
    "MASK_OUTPUT",
    "METADATA_KEYS",
    "OUTPUT_NAMES",
    "Detections",
    "OnnxPredictor",
    "paste_masks",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
