"""Pasting a Mask R-CNN's per-detection masks into the image, in numpy (no torch).

An exported mask model outputs each detection's mask as probabilities on a small square grid
(e.g. 28x28) over its box. :func:`paste_masks` turns them into image-sized binary masks as
Detectron2's ``paste_masks_in_image`` does on the CPU: each mask is resampled bilinearly onto the
pixel centres of the image (``grid_sample`` with ``align_corners=False`` and zeros outside the
grid), only within its box's bounds plus one pixel, and thresholded at ``threshold``
(probability >= threshold). Bilinear resampling on a separable grid is two matrix products, which
is how it is computed here.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["paste_masks"]


def _bilinear_weights(positions: np.ndarray, size: int) -> np.ndarray:
    """(len(positions), size) weights of bilinear interpolation at ``positions`` (in grid cells,
    cell centres at 0..size-1) with zero padding: neighbours outside the grid contribute 0."""
    low = np.floor(positions)
    frac = (positions - low).astype(np.float32)
    low = low.astype(np.int64)
    weights = np.zeros((len(positions), size), dtype=np.float32)
    rows = np.arange(len(positions))
    for index, weight in ((low, 1 - frac), (low + 1, frac)):
        inside = (index >= 0) & (index < size)
        weights[rows[inside], index[inside]] += weight[inside]
    return weights


def _paste_one(
    mask: np.ndarray, box: np.ndarray, height: int, width: int, threshold: float
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """One (M, M) probability mask on its (x0, y0, x1, y1) box: the binary mask of the image
    region the box may touch, and that region's (row, column) slices."""
    x0, y0, x1, y1 = (float(v) for v in box)
    # The region Detectron2 pastes into: the box's integer bounds, one pixel wider each way.
    col0, row0 = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
    col1 = max(min(math.ceil(x1) + 1, width), col0)
    row1 = max(min(math.ceil(y1) + 1, height), row0)
    size = mask.shape[-1]
    # Pixel centres in box coordinates ([-1, 1] over the box), then in mask cells as
    # grid_sample(align_corners=False) reads them: ((g + 1) * size - 1) / 2.
    xs = (np.arange(col0, col1, dtype=np.float32) + 0.5 - np.float32(x0)) / np.float32(x1 - x0)
    ys = (np.arange(row0, row1, dtype=np.float32) + 0.5 - np.float32(y0)) / np.float32(y1 - y0)
    xs = ((xs * 2 - 1 + 1) * size - 1) / 2
    ys = ((ys * 2 - 1 + 1) * size - 1) / 2
    values = _bilinear_weights(ys, size) @ mask.astype(np.float32) @ _bilinear_weights(xs, size).T
    return values >= threshold, (slice(row0, row1), slice(col0, col1))


def paste_masks(
    masks: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float = 0.5
) -> np.ndarray:
    """(N, M, M) mask probabilities on their (N, 4) XYXY boxes (in the image's pixels, clipped
    to it as a detector's are) -> (N, height, width) bool masks, as Detectron2's
    ``paste_masks_in_image``."""
    masks = np.asarray(masks)
    boxes = np.asarray(boxes, dtype=np.float32)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"expected (N, M, M) square masks, got shape {masks.shape}")
    if boxes.shape != (len(masks), 4):
        raise ValueError(
            f"expected ({len(masks)}, 4) boxes for {len(masks)} masks, got {boxes.shape}"
        )
    out = np.zeros((len(masks), height, width), dtype=bool)
    for i, (mask, box) in enumerate(zip(masks, boxes)):
        pasted, (rows, cols) = _paste_one(mask, box, height, width, threshold)
        out[i, rows, cols] = pasted
    return out
