"""dyhead_d2.inference.drawing: boxes land where the detections are, with Detectron2's Visualizer
(needs OpenCV) and with the matplotlib fallback."""

import numpy as np
import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from detectron2.structures import Boxes, Instances  # noqa: E402

from dyhead_d2.inference.drawing import (  # noqa: E402
    detection_labels,
    draw_detections,
    visualizer_available,
)

PATHS = [
    False,
    pytest.param(
        True,
        marks=pytest.mark.skipif(
            not visualizer_available(), reason="Detectron2's Visualizer needs OpenCV (cv2)"
        ),
    ),
]


def _one_box(x0=60, y0=20, x1=140, y1=110):
    # 90 px tall: Visualizer puts the label at the top-left, not below, up to scale 2.
    inst = Instances((120, 160))
    inst.pred_boxes = Boxes(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32))
    inst.scores = torch.tensor([0.87])
    inst.pred_classes = torch.tensor([1])
    return inst


def test_labels_are_name_and_percent():
    inst = _one_box()
    assert detection_labels(inst, ["circle", "square"]) == ["square 87%"]
    assert detection_labels(inst, None) == ["1 87%"]


@pytest.mark.parametrize("use_visualizer", PATHS)
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_box_is_drawn_where_the_detection_is(use_visualizer, scale):
    image = np.full((120, 160, 3), 128, dtype=np.uint8)
    meta = {"thing_classes": ["circle", "square"]}
    out = draw_detections(image, _one_box(), meta, scale=scale, use_visualizer=use_visualizer)
    assert out.dtype == np.uint8 and out.shape == (round(120 * scale), round(160 * scale), 3)
    changed = np.abs(out.astype(int) - 128).max(axis=2) > 30

    def s(v):
        return int(round(v * scale))

    # The box's right and bottom edges (away from the label at its top-left) are drawn ...
    assert changed[s(50) : s(100), s(138) : s(143)].any(axis=1).all()
    assert changed[s(108) : s(113), s(90) : s(130)].any(axis=0).all()
    # ... and its inside (below the label) and the image far from it are left alone.
    assert not changed[s(55) : s(100), s(80) : s(130)].any()
    assert not changed[s(0) : s(15), :].any() and not changed[:, s(0) : s(50)].any()
    assert not changed[s(115) :, :].any()


@pytest.mark.parametrize("use_visualizer", PATHS)
def test_mask_is_filled_where_it_is(use_visualizer):
    # A mask covering the box's right half, from its top edge to its bottom edge.
    inst = _one_box()
    mask = torch.zeros(1, 120, 160, dtype=torch.bool)
    mask[0, 20:110, 100:140] = True
    inst.pred_masks = mask
    image = np.full((120, 160, 3), 128, dtype=np.uint8)
    meta = {"thing_classes": ["circle", "square"]}
    out = draw_detections(image, inst, meta, use_visualizer=use_visualizer)
    changed = np.abs(out.astype(int) - 128).max(axis=2) > 30
    assert changed[40:100, 105:135].all()  # inside the mask: filled
    assert not changed[55:100, 65:95].any()  # inside the box, left of the mask: not
