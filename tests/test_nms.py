"""Class-aware NMS: one NMS per class on the original coordinates, whatever the device or the
number of boxes, and the same in the exported ONNX graph."""

import pytest
import torch
from torchvision.ops import nms
from torchvision.ops.boxes import _batched_nms_coordinate_trick

from . import needs_detectron2

needs_detectron2()

from dyhead_d2.modeling.nms import class_aware_nms  # noqa: E402

NUM_CLASSES = 80

# Two boxes of class 79, 94 px wide, 23.48 px apart along x: IoU 0.60006 -> 0.5999999 (kept by
# NMS at 0.6) on these float32 coordinates. A box of class 0 sets the largest coordinate to
# 1333, as on a COCO-sized image, so the offset trick shifts class 79 by 79 * 1334 = 105386 px,
# where float32 rounds to 1/128 px: the shifted pair overlaps with IoU above 0.6 and the second
# box is suppressed.
PAIR = [
    [83.8579330444336, 58.005130767822266, 177.7708282470703, 220.45376586914062],
    [107.3366470336914, 58.005130767822266, 201.24954223632812, 220.45376586914062],
]
FAR = [1300.0, 700.0, 1333.0, 800.0]


def flip_case():
    boxes = torch.tensor([*PAIR, FAR])
    scores = torch.tensor([0.9, 0.8, 0.5])
    classes = torch.tensor([79, 79, 0])
    return boxes, scores, classes


def per_class_reference(boxes, scores, classes, thresh):
    """NMS of each class alone, then all kept boxes by descending score (ties: class, index)."""
    kept = []
    for c in sorted(set(classes.tolist())):
        idx = torch.nonzero(classes == c).squeeze(1)
        kept += idx[nms(boxes[idx], scores[idx], thresh)].tolist()
    return sorted(kept, key=lambda i: (-scores[i].item(), classes[i].item(), kept.index(i)))


def test_the_offset_trick_flips_this_suppression():
    # The premise of the case: per class, both boxes of class 79 stay; shifted, one goes.
    boxes, scores, classes = flip_case()
    assert nms(boxes[:2], scores[:2], 0.6).tolist() == [0, 1]
    assert sorted(_batched_nms_coordinate_trick(boxes, scores, classes, 0.6).tolist()) == [0, 2]


def test_per_class_on_original_coordinates():
    boxes, scores, classes = flip_case()
    assert class_aware_nms(boxes, scores, classes, 0.6, NUM_CLASSES).tolist() == [0, 1, 2]


def test_same_keep_whatever_the_box_count():
    # torchvision switches algorithm at 1,000 boxes on the CPU (25,000 on CUDA): the flip case
    # alone and among 3,000 other boxes (of other classes, far away) must keep the same pair.
    boxes, scores, classes = flip_case()
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3000, 2, generator=g) * 500 + 600
    others = torch.cat([xy, xy + 20 + 80 * torch.rand(3000, 2, generator=g)], dim=1)
    many_boxes = torch.cat([boxes, others])
    many_scores = torch.cat([scores, torch.rand(3000, generator=g) * 0.4])
    many_classes = torch.cat([classes, torch.randint(0, 79, (3000,), generator=g)])
    keep = class_aware_nms(many_boxes, many_scores, many_classes, 0.6, NUM_CLASSES)
    assert {0, 1, 2} <= set(keep.tolist())
    assert keep.tolist() == per_class_reference(many_boxes, many_scores, many_classes, 0.6)


def test_random_boxes_match_the_reference_and_sort_ties_by_class():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(400, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 10 + 60 * torch.rand(400, 2, generator=g)], dim=1)
    # Scores on a coarse grid: many exact ties, within and across classes.
    scores = torch.randint(1, 20, (400,), generator=g).float() / 20
    classes = torch.randint(0, 5, (400,), generator=g)
    keep = class_aware_nms(boxes, scores, classes, 0.5, 5)
    assert keep.tolist() == per_class_reference(boxes, scores, classes, 0.5)
    s = scores[keep]
    assert bool((s[:-1] >= s[1:]).all())


def test_empty_and_float16():
    empty = class_aware_nms(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.6, 3
    )
    assert empty.shape == (0,) and empty.dtype == torch.int64
    boxes, scores, classes = flip_case()
    keep = class_aware_nms(boxes.half(), scores.half(), classes, 0.6, NUM_CLASSES)
    assert sorted(keep.tolist()) == sorted(
        per_class_reference(boxes.half().float(), scores.half().float(), classes, 0.6)
    )


class _NMS(torch.nn.Module):
    def forward(self, boxes, scores, classes):
        return class_aware_nms(boxes, scores, classes, 0.6, NUM_CLASSES)


@pytest.mark.parametrize("case", ["flip", "random"])
def test_onnx_export_keeps_what_eager_keeps(tmp_path, case):
    ort = pytest.importorskip("onnxruntime")
    if case == "flip":
        boxes, scores, classes = flip_case()
    else:
        g = torch.Generator().manual_seed(2)
        xy = torch.rand(300, 2, generator=g) * 200
        boxes = torch.cat([xy, xy + 10 + 50 * torch.rand(300, 2, generator=g)], dim=1)
        scores = torch.randint(1, 10, (300,), generator=g).float() / 10
        classes = torch.randint(0, NUM_CLASSES, (300,), generator=g)
    path = str(tmp_path / "nms.onnx")
    torch.onnx.export(
        _NMS(),
        (boxes, scores, classes),
        path,
        dynamo=False,
        opset_version=17,
        input_names=["boxes", "scores", "classes"],
        dynamic_axes={"boxes": {0: "n"}, "scores": {0: "n"}, "classes": {0: "n"}},
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {"boxes": boxes.numpy(), "scores": scores.numpy(), "classes": classes.numpy()}
    (got,) = session.run(None, feeds)
    assert got.tolist() == class_aware_nms(boxes, scores, classes, 0.6, NUM_CLASSES).tolist()
