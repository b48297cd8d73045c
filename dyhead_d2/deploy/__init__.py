"""Deployment: ONNX export (needs torch and detectron2) and an onnxruntime predictor (needs only
onnxruntime, numpy and Pillow: importing it loads neither torch nor detectron2).

* :class:`OnnxPredictor`, :class:`Detections`: run an exported ``model.onnx`` on images.
* :func:`export_onnx`, :class:`ExportError`, :func:`describe_onnx`: write a config's model as
  ONNX (``tools/export_model.py``).
"""

from .metadata import METADATA_KEYS, OUTPUT_NAMES
from .onnx_predictor import Detections, OnnxPredictor

_EXPORT_NAMES = ("ExportError", "ExportedDetector", "describe_onnx", "export_onnx")

__all__ = ["METADATA_KEYS", "OUTPUT_NAMES", "Detections", "OnnxPredictor", *_EXPORT_NAMES]


def __getattr__(name: str):
    # The exporter imports torch and detectron2: only when one of its names is used.
    if name in _EXPORT_NAMES:
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
