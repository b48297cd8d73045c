"""OpenCV bilinear resizing (mmcv's default backend) as Detectron2 transforms."""

import numpy as np
import pytest

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from detectron2.data.transforms import ResizeShortestEdge, ResizeTransform  # noqa: E402
from PIL import Image  # noqa: E402

from dyhead_d2.data.cv2_resize import (  # noqa: E402
    CV2ResizeTransform,
    ResizeShortestEdgeCV2,
    resize_difference,
)


def test_cv2_bilinear_by_hand():
    # Shrinking [0, 0, 100, 100] to 2 pixels: OpenCV interpolates between the two source pixels
    # around each output centre (source x = 0.5 and 2.5): 0 and 100. Pillow's bilinear filter
    # widens to 2 pixels each side when halving: (0*.75 + 0*.75 + 100*.25) / 1.75 = 14.3 -> 14.
    img = np.array([[0, 0, 100, 100]] * 2, dtype=np.uint8)[:, :, None].repeat(3, axis=2)
    cv = CV2ResizeTransform(2, 4, 1, 2, Image.BILINEAR).apply_image(img)
    pil = ResizeTransform(2, 4, 1, 2, Image.BILINEAR).apply_image(img)
    assert cv.shape == pil.shape == (1, 2, 3)
    assert cv[0, :, 0].tolist() == [0, 100]
    assert pil[0, :, 0].tolist() == [14, 86]
    # Enlarging [0, 100] to 4: source x = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
    up = CV2ResizeTransform(1, 2, 1, 4, Image.BILINEAR).apply_image(
        np.array([[[0], [100]]], dtype=np.uint8)
    )
    assert up.shape == (1, 4, 1) and up[0, :, 0].tolist() == [0, 25, 75, 100]


def test_same_sizes_and_boxes_as_detectron2():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 451, 3), dtype=np.uint8)
    ours = ResizeShortestEdgeCV2(short_edge_length=200, max_size=1333).get_transform(img)
    theirs = ResizeShortestEdge(short_edge_length=200, max_size=1333).get_transform(img)
    assert isinstance(ours, CV2ResizeTransform)
    assert (ours.new_h, ours.new_w) == (theirs.new_h, theirs.new_w) == (200, 301)
    assert ours.apply_image(img).shape == (200, 301, 3)
    boxes = np.array([[10.0, 20, 400, 290]])
    np.testing.assert_allclose(ours.apply_box(boxes), theirs.apply_box(boxes))
    seg = (rng.integers(0, 5, (300, 451))).astype(np.uint8)
    assert set(np.unique(ours.apply_segmentation(seg))) <= set(range(5))  # nearest, not blended
    inv = ours.inverse()
    assert isinstance(inv, CV2ResizeTransform) and (inv.new_h, inv.new_w) == (300, 451)
    with pytest.raises(ValueError, match="expected an image of 300x451"):
        ours.apply_image(img[:10])


def test_resize_difference():
    img = np.array([[0, 0, 100, 100]] * 4, dtype=np.uint8)[:, :, None].repeat(3, axis=2)
    d = resize_difference(img, 2, 1333)  # 4x4 -> 2x2, the case above in each row
    assert d["scale"] == 0.5 and d["max"] == 14 and d["mean"] == 14
    assert d["over_1"] == d["over_4"] == 1.0
