"""An exported ``model.onnx`` behind :class:`~dyhead_d2.inference.Predictor`'s interface.

``tools/demo.py --onnx`` runs either kind of model through the same loop: ``model(bgr)`` returns
Detectron2 :class:`Instances` in the image's pixels, and ``weights``, ``device``, ``dataset_name``
and ``metadata`` describe it. The detections come from :class:`~dyhead_d2.deploy.OnnxPredictor`;
this adapter needs torch and detectron2 for the ``Instances``.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances

from ..inference.inputs import InputError
from .onnx_predictor import OnnxPredictor

__all__ = ["OnnxModel"]


class OnnxModel:
    """An exported model behind the interface the demo uses: ``predictor(bgr) -> Instances``."""

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise InputError(f"--onnx {path!r} does not exist")
        self.onnx = OnnxPredictor(path)
        self.weights, self.device, self.dataset_name = path, "onnxruntime (CPU)", None
        self.metadata = Metadata(thing_classes=self.onnx.class_names or None)

    def __call__(self, image: np.ndarray) -> Instances:
        found = self.onnx(image, format="BGR")
        instances = Instances(
            found.image_size,
            pred_boxes=Boxes(torch.from_numpy(found.boxes)),
            scores=torch.from_numpy(found.scores),
            pred_classes=torch.from_numpy(found.classes),
        )
        if found.masks is not None:
            instances.pred_masks = torch.from_numpy(found.masks)
        return instances
