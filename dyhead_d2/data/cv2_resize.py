"""Resizing with OpenCV's bilinear interpolation, MMDetection's default, as Detectron2 transforms.

Detectron2 resizes uint8 images with Pillow, whose bilinear filter widens with the scale factor
when it shrinks an image (antialiasing) and rounds differently; mmcv's default backend is
``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``, a plain 2x2 interpolation. MMDetection's
"simple" DyHead setting trained and evaluated with the latter. These keep Detectron2's output sizes
and box/polygon handling and change only how pixels are resampled.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .._detectron2 import require_detectron2

require_detectron2("dyhead_d2.data.cv2_resize")

from detectron2.data.transforms import (  # noqa: E402
    ResizeShortestEdge,
    ResizeTransform,
    Transform,
)

__all__ = ["CV2ResizeTransform", "ResizeShortestEdgeCV2", "cv2_resize", "resize_difference"]


def cv2_resize(img: np.ndarray, new_h: int, new_w: int, interp: int = Image.BILINEAR) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) array with OpenCV: ``Image.BILINEAR`` -> ``INTER_LINEAR``,
    ``Image.NEAREST`` -> ``INTER_NEAREST``. A trailing channel axis of size 1 is kept."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "OpenCV resizing (MMDetection's default) needs OpenCV: "
            "pip install opencv-python-headless (or dyhead_d2[tools])"
        ) from e
    codes = {Image.BILINEAR: cv2.INTER_LINEAR, Image.NEAREST: cv2.INTER_NEAREST}
    if interp not in codes:
        raise ValueError(f"cv2_resize supports Image.BILINEAR and Image.NEAREST, got {interp!r}")
    out = cv2.resize(np.ascontiguousarray(img), (new_w, new_h), interpolation=codes[interp])
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


class CV2ResizeTransform(ResizeTransform):
    """Detectron2's :class:`ResizeTransform` with the pixels resampled by OpenCV (see
    :func:`cv2_resize`); coordinates, boxes and polygons transform exactly as there."""

    def apply_image(self, img: np.ndarray, interp: int | None = None) -> np.ndarray:
        if tuple(img.shape[:2]) != (self.h, self.w):
            raise ValueError(f"expected an image of {self.h}x{self.w}, got {img.shape[:2]}")
        return cv2_resize(
            img, self.new_h, self.new_w, interp if interp is not None else self.interp
        )

    def inverse(self) -> Transform:
        return CV2ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)


class ResizeShortestEdgeCV2(ResizeShortestEdge):
    """Detectron2's :class:`ResizeShortestEdge` (same arguments, same output sizes) resampling
    with OpenCV's bilinear interpolation, as mmcv's default ``cv2`` backend does."""

    def get_transform(self, image: np.ndarray) -> Transform:
        t = super().get_transform(image)
        if isinstance(t, ResizeTransform):
            return CV2ResizeTransform(t.h, t.w, t.new_h, t.new_w, t.interp)
        return t


def resize_difference(img: np.ndarray, short_edge_length: int, max_size: int) -> dict[str, float]:
    """How far Detectron2's Pillow resize and OpenCV's bilinear resize of one uint8 (H, W, C)
    image to ``ResizeShortestEdge(short_edge_length, max_size)``'s size differ, per pixel value:
    ``max`` and ``mean`` absolute difference, and the fractions of values differing by more than 1
    and more than 4 grey levels; ``scale`` is the resize factor."""
    h, w = img.shape[:2]
    new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, short_edge_length, max_size)
    pil = ResizeTransform(h, w, new_h, new_w, Image.BILINEAR).apply_image(img)
    cv = CV2ResizeTransform(h, w, new_h, new_w, Image.BILINEAR).apply_image(img)
    diff = np.abs(pil.astype(np.int16) - cv.astype(np.int16))
    return {
        "scale": new_h / h,
        "max": float(diff.max()),
        "mean": float(diff.mean()),
        "over_1": float((diff > 1).mean()),
        "over_4": float((diff > 4).mean()),
    }
