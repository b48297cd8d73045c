"""Running an exported detector with onnxruntime, numpy and Pillow only (no torch, no detectron2).

:class:`OnnxPredictor` reads the file's metadata (written by
:func:`dyhead_d2.deploy.export_onnx`): the input format, how the config's test loader resizes
and the class names. It resizes each image the way that loader does (Pillow, like Detectron2's
``ResizeTransform`` on uint8 images), runs the graph and scales the boxes back to the image; a
mask model's per-detection masks are pasted into image-sized binary masks
(:func:`~dyhead_d2.deploy.masks.paste_masks`), as Detectron2's ``detector_postprocess`` does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from .masks import paste_masks
from .metadata import MASK_OUTPUT, METADATA_KEYS, OUTPUT_NAMES, resized_shape

__all__ = ["Detections", "OnnxPredictor", "read_image"]


@dataclass
class Detections:
    """Detections of one image, in its own pixels, highest score first."""

    boxes: np.ndarray  # (N, 4) float32, XYXY
    scores: np.ndarray  # (N,) float32
    classes: np.ndarray  # (N,) int64 class ids
    class_names: list[str] = field(default_factory=list)  # (N,) names ("" without names)
    image_size: tuple[int, int] = (0, 0)  # (height, width) of the image
    masks: np.ndarray | None = None  # (N, height, width) bool, a mask model's; else None

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, keep) -> Detections:
        """The detections ``keep`` selects (a boolean mask, indices or a slice)."""
        names = np.asarray(self.class_names, dtype=object)[keep].tolist() if len(self) else []
        masks = None if self.masks is None else self.masks[keep]
        return Detections(
            self.boxes[keep], self.scores[keep], self.classes[keep], names, self.image_size, masks
        )


def read_image(path: str | os.PathLike, format: str = "BGR") -> np.ndarray:
    """An (H, W, 3) uint8 array in ``format`` ("BGR" or "RGB"), EXIF orientation applied."""
    with Image.open(path) as image:
        rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    return rgb[:, :, ::-1].copy() if format == "BGR" else rgb


class OnnxPredictor:
    """An exported ``model.onnx`` as a predictor: image in, :class:`Detections` out.

    Args:
        model_path: the ``.onnx`` file written by ``tools/export_model.py``.
        providers: onnxruntime execution providers (default: the CPU provider).
        num_threads: onnxruntime's intra-op threads (default: onnxruntime's choice).

    Calling it takes an image path or an (H, W, 3) uint8 array in BGR order (as OpenCV reads
    it, like Detectron2's ``DefaultPredictor``; ``format="RGB"`` for RGB arrays), resizes it as
    the exported config's test loader does, and returns the detections in the original image's
    pixels.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        providers: list[str] | None = None,
        num_threads: int | None = None,
    ):
        import onnxruntime as ort

        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"ONNX model {os.fspath(model_path)!r} does not exist")
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(
                os.fspath(model_path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's own exception types, one per status code
            if "DeformConv" not in str(e):
                raise
            raise RuntimeError(
                f"{os.fspath(model_path)!r} uses ONNX's DeformConv op, which onnxruntime "
                f"{ort.__version__} cannot run here (its CPU kernel came in 1.25); upgrade "
                "onnxruntime, or re-export with tools/export_model.py --deform-op gather"
            ) from e
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in ("input_format", "resize") if METADATA_KEYS[k] not in meta]
        if missing:
            raise ValueError(
                f"{os.fspath(model_path)!r} has no {', '.join(missing)} metadata; export it "
                "with tools/export_model.py"
            )
        self.input_format = meta[METADATA_KEYS["input_format"]]
        self.resize = json.loads(meta[METADATA_KEYS["resize"]])
        self.class_names: list[str] = json.loads(meta.get(METADATA_KEYS["class_names"], "[]"))
        self.metadata = dict(meta)
        outputs = [o.name for o in self.session.get_outputs()]
        #: Whether the model predicts masks (a fourth output, MASK_OUTPUT).
        self.has_masks = MASK_OUTPUT in outputs
        self.output_names = [*OUTPUT_NAMES, MASK_OUTPUT] if self.has_masks else list(OUTPUT_NAMES)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The model's input for an (H, W, 3) uint8 image in :attr:`input_format`: (3, h, w)
        float32 after the test loader's resizing."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 image, got {image.dtype} shape {image.shape}"
            )
        height, width = image.shape[:2]
        new_h, new_w = resized_shape(height, width, self.resize)
        if (new_h, new_w) != (height, width):
            resample = self.resize.get("interp", Image.BILINEAR)
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample))
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)

    def __call__(self, image: np.ndarray | str | os.PathLike, format: str = "BGR") -> Detections:
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image, self.input_format)
        else:
            if format not in ("BGR", "RGB"):
                raise ValueError(f"format must be 'BGR' or 'RGB', got {format!r}")
            image = np.asarray(image)
            if format != self.input_format:
                image = image[:, :, ::-1]
        height, width = image.shape[:2]
        tensor = self.preprocess(image)
        boxes, scores, classes, *masks = self.session.run(self.output_names, {"image": tensor})
        # Back to the original pixels, then clipped to the image, as detector_postprocess does.
        scale = np.array([width / tensor.shape[2], height / tensor.shape[1]] * 2, dtype=np.float32)
        boxes = boxes * scale
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        names = [
            self.class_names[c] if 0 <= c < len(self.class_names) else "" for c in classes[keep]
        ]
        pasted = None
        if masks:
            # Pasted on the final boxes, at the image's size, as detector_postprocess does.
            pasted = paste_masks(masks[0][keep], boxes[keep], height, width)
        return Detections(boxes[keep], scores[keep], classes[keep], names, (height, width), pasted)
