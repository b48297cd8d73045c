"""Exported detectors give PyTorch's detections: the quickstart model (random, lively weights) at
several image sizes through tools/export_model.py (both --deform-op), OnnxPredictor in original
coordinates (also in a process without torch), demo.py --onnx, dyhead_d2.Predictor; and the R-50
reproduction model (random weights, biased classifier) at 800x1216 (both deform ops). Slow: each
export traces a whole detector."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from . import needs_detectron2

needs_detectron2()

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402

import dyhead_d2  # noqa: E402
from dyhead_d2.config import load_config  # noqa: E402
from dyhead_d2.deploy import OnnxPredictor  # noqa: E402
from dyhead_d2.deploy.export import ExportedDetector, export_onnx, sample_image  # noqa: E402
from dyhead_d2.deploy.parity import compare_detections  # noqa: E402
from dyhead_d2.inference import read_image  # noqa: E402
from dyhead_d2.modeling import DeformBottleneckBlock  # noqa: E402

from .tiny_quickstart import ROOT, tool_env  # noqa: E402
from .tool_entry import load_tool  # noqa: E402

pytestmark = pytest.mark.slow

R50 = "configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py"


def instances_as_arrays(instances):
    return (
        instances.pred_boxes.tensor.numpy(),
        instances.scores.numpy(),
        instances.pred_classes.numpy(),
    )


DEFORM_OPS = ("DeformConv", "gather")


@pytest.fixture(scope="module")
def tiny_exports(tiny_model, tmp_path_factory):
    """deform_op -> (model.onnx of the tiny quickstart written by tools/export_model.py, its
    stdout)."""
    out = {}
    for deform_op in DEFORM_OPS:
        out_dir = tmp_path_factory.mktemp(f"tiny_onnx_{deform_op}")
        tool = load_tool("export_model")
        stdout = io.StringIO()
        args = ["--config-file", tiny_model.config, "--output", str(out_dir)]
        args += ["--deform-op", deform_op, *tiny_model.overrides]
        args += [f"train.init_checkpoint={tiny_model.checkpoint}"]
        with contextlib.redirect_stdout(stdout):
            assert tool.main(args) == 0
        out[deform_op] = out_dir / "model.onnx", stdout.getvalue()
    return out


@pytest.fixture(scope="module")
def tiny_onnx(tiny_exports):
    """The default export (DeformConv): (model.onnx, the tool's stdout)."""
    return tiny_exports["DeformConv"]


@pytest.mark.parametrize("deform_op", DEFORM_OPS)
def test_export_tool_prints_the_signature_and_the_check(tiny_exports, deform_op):
    path, stdout = tiny_exports[deform_op]
    assert path.is_file()
    assert "image: float32 (3, height, width)" in stdout
    assert "boxes: float32 (detections, 4)" in stdout
    assert "scores: float32 (detections)" in stdout
    assert "classes: int64 (detections)" in stdout
    assert f"opset: ai.onnx {19 if deform_op == 'DeformConv' else 17}" in stdout
    line = next(x for x in stdout.splitlines() if x.startswith("onnxruntime vs PyTorch"))
    assert "NOT MATCHED" not in line
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("DeformConv" in ops) == (deform_op == "DeformConv")
    assert OnnxPredictor(path).metadata["dyhead_d2.deform_op"] == deform_op


@pytest.mark.parametrize("deform_op", DEFORM_OPS)
@pytest.mark.parametrize("size", [(320, 448), (256, 256), (200, 300), (384, 320), (131, 517)])
def test_quickstart_parity_at_several_sizes(tiny_model, tiny_exports, size, deform_op):
    model = ExportedDetector(tiny_model.build())
    session = ort.InferenceSession(
        str(tiny_exports[deform_op][0]), providers=["CPUExecutionProvider"]
    )
    image = sample_image(size, seed=sum(size))
    with torch.no_grad():
        expected = [t.numpy() for t in model(image)]
    got = session.run(None, {"image": image.numpy()})
    assert got[0].dtype == np.float32 and got[2].dtype == np.int64
    assert len(expected[1]) > 10  # the lively weights detect plenty
    parity = compare_detections(expected, got, max_detections=100, nms_thresh=0.6)
    assert parity.ok, f"{size}: {parity}"
    assert parity.matched >= len(expected[1]) - 2


def test_onnx_predictor_matches_predictor_in_original_coordinates(tiny_model, tiny_onnx):
    onnx_predictor = OnnxPredictor(tiny_onnx[0])
    predictor = dyhead_d2.Predictor(
        tiny_model.config, str(tiny_model.checkpoint), **_overrides(tiny_model)
    )
    assert onnx_predictor.class_names == list(predictor.metadata.thing_classes)
    assert len(onnx_predictor.class_names) == 5
    for path in tiny_model.val_images[:3]:
        bgr = read_image(str(path), "BGR")
        found = onnx_predictor(str(path))
        from_array = onnx_predictor(bgr)
        np.testing.assert_array_equal(found.boxes, from_array.boxes)
        expected = instances_as_arrays(predictor(str(path)))
        parity = compare_detections(
            expected, (found.boxes, found.scores, found.classes), max_detections=100, nms_thresh=0.6
        )
        assert parity.ok, f"{path}: {parity}"
        assert found.image_size == bgr.shape[:2]
        assert found.class_names == [onnx_predictor.class_names[c] for c in found.classes]


def _overrides(tiny_model) -> dict:
    """The tiny model's key=value overrides as Predictor keyword arguments."""
    out = {}
    for item in tiny_model.overrides:
        key, value = item.split("=", 1)
        out[key] = int(value) if value.isdigit() else value
    return out


def test_predictor_api(tiny_model):
    predictor = dyhead_d2.Predictor(
        tiny_model.config, str(tiny_model.checkpoint), **_overrides(tiny_model)
    )
    model = tiny_model.build()
    path = tiny_model.val_images[0]
    bgr = read_image(str(path), "BGR")
    with torch.no_grad():
        expected = model([{"image": torch.as_tensor(bgr.transpose(2, 0, 1).copy())}])[0]
    for image in (bgr, str(path)):
        got = predictor(image)
        torch.testing.assert_close(got.pred_boxes.tensor, expected["instances"].pred_boxes.tensor)
        torch.testing.assert_close(got.scores, expected["instances"].scores)
    # An override by keyword: at most 3 detections, the 3 best of the default.
    three = dyhead_d2.Predictor(
        tiny_model.config,
        str(tiny_model.checkpoint),
        model__max_detections_per_image=3,
        **_overrides(tiny_model),
    )(bgr)
    assert len(three) == 3
    torch.testing.assert_close(three.scores, expected["instances"].scores[:3])


def test_onnx_predictor_runs_without_torch(tiny_model, tiny_onnx):
    path = tiny_model.val_images[1]
    code = (
        "import sys, json\n"
        "for name in ('torch', 'torchvision', 'detectron2'):\n"
        "    sys.modules[name] = None\n"
        "from dyhead_d2.deploy import OnnxPredictor\n"
        f"found = OnnxPredictor({str(tiny_onnx[0])!r})({str(path)!r})\n"
        "print(json.dumps([found.boxes.tolist(), found.scores.tolist(), found.classes.tolist()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=tool_env(tiny_model.checkpoint.parent),
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    boxes, scores, classes = json.loads(out.stdout.strip().splitlines()[-1])
    found = OnnxPredictor(tiny_onnx[0])(str(path))
    assert len(scores) == len(found) > 0
    np.testing.assert_allclose(boxes, found.boxes, atol=1e-4)
    np.testing.assert_array_equal(classes, found.classes)


def test_demo_draws_the_onnx_detections(tiny_model, tiny_onnx, tmp_path):
    demo = load_tool("demo")
    images = tiny_model.val_images[:2]
    args = ["--onnx", str(tiny_onnx[0]), "--input", *map(str, images), "--output", str(tmp_path)]
    assert demo.main([*args, "--confidence-threshold", "0.2"]) == 0
    predictor = OnnxPredictor(tiny_onnx[0])
    for path in images:
        results = json.loads((tmp_path / f"{path.stem}.json").read_text())
        found = predictor(str(path))
        keep = found.scores >= 0.2
        assert len(results) == int(keep.sum()) > 0
        np.testing.assert_allclose([r["score"] for r in results], found.scores[keep], rtol=1e-6)
        x0, y0, x1, y1 = found.boxes[keep][0]
        np.testing.assert_allclose(results[0]["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1e-3)
        picture = np.asarray(__import__("PIL.Image").Image.open(tmp_path / f"{path.stem}.png"))
        assert picture.shape[:2] == found.image_size


def test_unexportable_model_is_one_line_saying_what_to_set(tiny_model, tmp_path, capsys):
    tool = load_tool("export_model")
    config = ["--config-file", tiny_model.config, "--output", str(tmp_path)]
    opts = [*tiny_model.overrides, f"train.init_checkpoint={tiny_model.checkpoint}"]
    torchvision_impl = "+model.backbone.dyhead.deform_impl=torchvision"
    assert tool.main([*config, "--deform-op", "gather", *opts, torchvision_impl]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deform_impl=sampled" in err[0], err
    assert tool.main([*config, "--opset", "17", *opts]) == 2  # DeformConv is opset 19
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs opset >= 19" in err[0], err
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("deform_op", DEFORM_OPS)
def test_r50_reproduction_parity_at_800x1216(tmp_path, deform_op):
    """Random weights, the classifier's spread x20 and its bias lowered so that a few thousand
    candidates pass the 0.05 threshold with well-spread scores (nearly equal scores would trade
    places in NMS); a 600x912 image, which the config's test loader resizes to 800x1216."""
    cfg = load_config(R50)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        model.head.cls_logits.weight.mul_(20.0)
        model.head.cls_logits.bias.fill_(-9.0)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("r50")
    cfg.train.init_checkpoint = str(tmp_path / "r50.pth")
    export = export_onnx(
        cfg, tmp_path / "model.onnx", deform_op=deform_op, sample_size=(256, 384), verify=False
    )
    onnx_predictor = OnnxPredictor(export.path)
    assert onnx_predictor.resize == {
        "type": "shortest_edge",
        "short_edge": 800,
        "max_size": 1333,
        "interp": 2,
    }
    assert onnx_predictor.class_names[:3] == ["person", "bicycle", "car"]
    g = np.random.default_rng(0)
    bgr = g.integers(0, 256, (600, 912, 3), dtype=np.uint8)
    assert onnx_predictor.preprocess(bgr).shape == (3, 800, 1216)
    found = onnx_predictor(bgr)
    # In the traced graph's layout: with these random weights (features up to ~1e4, offsets of
    # hundreds of pixels) channels-last rounding alone moves scores by ~1e-4 (the layouts are
    # compared in float64 in test_memory_format.py).
    predictor = dyhead_d2.Predictor(cfg, device="cpu", model__backbone__memory_format="contiguous")
    expected = instances_as_arrays(predictor(bgr))
    parity = compare_detections(
        expected, (found.boxes, found.scores, found.classes), max_detections=100, nms_thresh=0.6
    )
    assert len(found) >= 10
    assert parity.ok, parity
    print(f"R-50 800x1216 onnxruntime ({deform_op}) vs PyTorch: {parity}")


def _lively_retinanet(model) -> None:
    """Random RetinaNet weights that detect: a Kaiming-initialised classification tower (its
    default N(0, 0.01) shrinks the features to nothing) and a sharper classifier."""
    for m in model.head.cls_subnet:
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
    model.head.cls_score.weight.mul_(10.0)
    model.head.cls_score.bias.fill_(-5.0)


def _lively_faster_rcnn(model) -> None:
    """A sharper softmax classifier, so that random boxes pass the 0.05 score threshold (x8:
    much sharper, x20, turns float rounding into score differences above 1e-4)."""
    model.roi_heads.box_predictor.cls_score.weight.mul_(8.0)


@torch.no_grad()
def _calibrate_backbone(model, image) -> None:
    """Give a randomly initialised ResNet + FPN a trained network's scale, in one forward pass
    on ``image``: every FrozenBatchNorm2d's statistics become those of what it receives (so that
    it normalises its input), and the FPN's output and P6/P7 convolutions are rescaled to unit
    spread. With Detectron2's default statistics random weights grow the activations to ~1e4:
    offsets predicted from them are hundreds of pixels (a deformable backbone would sample only
    zeros), and the float rounding in which onnxruntime and PyTorch differ moves DyHead's sampling
    positions visibly (the R-50 FCOS model's P3 differed by ~3e-3, ~1e-4 once calibrated)."""

    def normalise(module, args):
        # Per-channel means, one variance per layer: a channel that barely varies must not be
        # multiplied up (by up to 1/sqrt(eps)), rounding noise with it.
        x = args[0]
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.fill_(x.var((0, 2, 3)).mean().item())

    def unit(module, args, out):
        scale = out.std()
        module.weight.div_(scale)
        if module.bias is not None:
            module.bias.div_(scale)
        return out / scale

    fpn = model.backbone.fpn
    outputs = [
        m
        for name, m in fpn.named_modules()
        if name.startswith(("fpn_output", "top_block.")) and isinstance(m, torch.nn.Conv2d)
    ]
    hooks = [
        m.register_forward_pre_hook(normalise)
        for m in fpn.bottom_up.modules()
        if isinstance(m, FrozenBatchNorm2d)
    ]
    hooks += [m.register_forward_hook(unit) for m in outputs]
    model([{"image": image}])
    for hook in hooks:
        hook.remove()


def _lively_fcos(model) -> None:
    """Random FCOS weights that detect: a calibrated backbone, Kaiming-initialised towers (the
    classification tower feeds the class scores, the box tower the centerness) and a sharper
    classifier, so that a few hundred locations pass Detectron2's 0.2 threshold on sqrt(class x
    centerness), fewer than the 1000 per level kept before NMS (where near-equal scores would
    make the two runs keep different ones)."""
    _calibrate_backbone(model, sample_image((256, 384), seed=3))
    for tower in (model.head.cls_subnet, model.head.bbox_subnet):
        for m in tower:
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
    model.head.cls_score.weight.mul_(2.0)
    model.head.cls_score.bias.fill_(-6.0)


def _lively_mask_rcnn(model) -> None:
    """As Faster R-CNN's, and mask logits of a few units (masks not decided by rounding)."""
    _lively_faster_rcnn(model)
    predictor = model.roi_heads.mask_head.predictor
    predictor.weight.copy_(torch.randn(predictor.weight.shape) * 0.5)


@pytest.mark.parametrize(
    "config, make_lively",
    [
        ("configs/COCO/retinanet_dyhead_R_50_caffe_FPN_1x.py", _lively_retinanet),
        ("configs/COCO/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py", _lively_faster_rcnn),
        ("configs/COCO/fcos_dyhead_R_50_caffe_FPN_1x.py", _lively_fcos),
        ("configs/COCO/mask_rcnn_dyhead_R_50_caffe_FPN_1x.py", _lively_mask_rcnn),
    ],
    ids=["retinanet", "faster_rcnn", "fcos", "mask_rcnn"],
)
def test_retinanet_faster_rcnn_fcos_and_mask_rcnn_parity(tmp_path, config, make_lively):
    """The other meta-architectures (Detectron2's own) export through the same path
    (DeformConv) and give PyTorch's detections (and Mask R-CNN's masks) on an image of another
    size than the traced one."""
    cfg = load_config(config)
    cfg.model.backbone.memory_format = "contiguous"  # the traced graph's layout, as above
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        make_lively(model)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("w")
    cfg.train.init_checkpoint = str(tmp_path / "w.pth")
    export = export_onnx(cfg, tmp_path / "model.onnx", sample_size=(256, 384), verify=False)
    assert export.metadata["dyhead_d2.meta_architecture"] == type(model).__name__
    session = ort.InferenceSession(export.path, providers=["CPUExecutionProvider"])
    image = sample_image((384, 544), seed=1)
    with torch.no_grad():
        expected = [t.numpy() for t in ExportedDetector(model)(image)]
    got = session.run(None, {"image": image.numpy()})
    nms = getattr(model, "test_nms_thresh", None)
    if nms is None:
        nms = model.roi_heads.box_predictor.test_nms_thresh
    parity = compare_detections(expected[:3], got[:3], max_detections=100, nms_thresh=nms)
    print(f"{type(model).__name__} 384x544 onnxruntime vs PyTorch: {parity}")
    assert len(expected[1]) >= 5
    assert parity.ok, parity
    if len(expected) == 4:  # Mask R-CNN: (N, 28, 28) probabilities of the same detections
        assert got[3].shape[1:] == (28, 28)
        diff = max(float(np.abs(expected[3][i] - got[3][j]).max()) for i, j in parity.pairs)
        spread = np.concatenate([m.ravel() for m in expected[3]])
        assert diff < 1e-3 and spread.std() > 0.05, (diff, spread.std())


def _lively_dcn_backbone(model, image, seed: int = 0) -> None:
    """Offsets of about a pixel and masks spread over (0, 1) in every deformable backbone block
    (their convs start at zero: a plain convolution with a constant mask), a backbone calibrated
    on ``image`` (see :func:`_calibrate_backbone`; 101 random layers scale another image's
    activations differently: x12 at res4 for 320x448 against 256x384, enough for offsets of
    several pixels whose rounding the following 22 deformable blocks amplify) and a classifier
    whose scores spread. DyHead keeps the authors' initialisation, whose offset convs already
    give offsets of a fraction of a pixel."""
    g = torch.Generator().manual_seed(seed)
    for block in model.modules():
        if isinstance(block, DeformBottleneckBlock):
            w, b = block.conv2_offset.weight, block.conv2_offset.bias
            w.add_(torch.randn(w.shape, generator=g) * 0.03 / w[0].numel() ** 0.5)
            b[:18].add_(torch.randn(18, generator=g) * 0.3)  # offsets
            b[18:].add_(torch.randn(9, generator=g) * 1.5)  # mask logits
    _calibrate_backbone(model, image)
    # Class logits spread by 2.5 around -8 on this image's pyramid: a few thousand candidates
    # above the 0.05 threshold, well-spread scores.
    features = model.backbone(model.preprocess_image([{"image": image}]).tensor)
    rms = torch.cat([f.flatten() for f in features.values()]).square().mean().sqrt().item()
    weight = model.head.cls_logits.weight
    weight.normal_(0.0, 2.5 / (rms * weight[0].numel() ** 0.5), generator=g)
    model.head.cls_logits.bias.fill_(-8.0)


def test_x101_dcn_exports_backbone_deform_convs_and_matches(tmp_path):
    """The ResNeXt-101 64x4d DCN model: every deformable convolution (the backbone's 30 grouped
    ones and DyHead's) is an ONNX DeformConv, and onnxruntime gives PyTorch's detections on an
    image of another size than the traced one."""
    cfg = load_config("configs/COCO/atss_dyhead_X_101_64x4d_DCN_FPN_2x_ms.py")
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    image = sample_image((320, 448), seed=2)
    with torch.no_grad():
        _lively_dcn_backbone(model, image)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("x101_dcn")
    cfg.train.init_checkpoint = str(tmp_path / "x101_dcn.pth")
    export = export_onnx(cfg, tmp_path / "model.onnx", sample_size=(256, 320), verify=False)
    graph = onnx.load(export.path, load_external_data=False).graph
    deform = [n for n in graph.node if n.op_type == "DeformConv"]
    groups = [next(a.i for a in n.attribute if a.name == "group") for n in deform]
    assert groups.count(64) == 4 + 23 + 3
    assert len(deform) == 30 + 6 * (5 + 4 + 4)  # DyHead: mid on 5 levels, low and high on 4
    session = ort.InferenceSession(export.path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = [t.numpy() for t in ExportedDetector(model)(image)]
    got = session.run(None, {"image": image.numpy()})
    parity = compare_detections(expected, got, max_detections=100, nms_thresh=0.6)
    print(f"X-101-64x4d-DCN 320x448 onnxruntime vs PyTorch: {parity}")
    assert len(expected[1]) >= 10
    assert parity.ok, parity


# ---------------------------------------------------------------------------------------------
# Mask R-CNN: the mask quickstart shrunk, random weights that detect (tiny_mask_model).

# A score threshold inside the lively model's scores, so that the number of detections varies
# from image to image (below the 100 cut): the graph's detection count must be dynamic.
MASK_SCORE_THRESH = "model.roi_heads.box_predictor.test_score_thresh=0.29"


@pytest.fixture(scope="module")
def tiny_mask_onnx(tiny_mask_model, tmp_path_factory):
    """(model.onnx of the tiny mask model written by tools/export_model.py, its stdout)."""
    out_dir = tmp_path_factory.mktemp("tiny_mask_onnx")
    stdout = io.StringIO()
    args = ["--config-file", tiny_mask_model.config, "--output", str(out_dir)]
    args += [*tiny_mask_model.overrides, MASK_SCORE_THRESH]
    args += [f"train.init_checkpoint={tiny_mask_model.checkpoint}"]
    with contextlib.redirect_stdout(stdout):
        assert load_tool("export_model").main(args) == 0
    return out_dir / "model.onnx", stdout.getvalue()


def test_mask_export_adds_the_masks_output(tiny_mask_onnx):
    path, stdout = tiny_mask_onnx
    assert "masks: float32 (detections, 28, 28)" in stdout
    assert "boxes: float32 (detections, 4)" in stdout
    line = next(x for x in stdout.splitlines() if x.startswith("masks: largest probability"))
    assert float(line.split("difference ")[1].split()[0]) <= 1e-3
    assert OnnxPredictor(path).has_masks


def test_mask_parity_onnx_predictor_against_predictor(tiny_mask_model, tiny_mask_onnx):
    """Same detections as dyhead_d2.Predictor (the model with detector_postprocess) on the val
    images and on random images of other sizes, and every pasted mask's IoU with PyTorch's
    >= 0.99."""
    import time

    from dyhead_d2.deploy.parity import mask_iou

    onnx_predictor = OnnxPredictor(tiny_mask_onnx[0])
    overrides = _overrides(tiny_mask_model)
    overrides["model.roi_heads.box_predictor.test_score_thresh"] = 0.29
    predictor = dyhead_d2.Predictor(
        tiny_mask_model.config, str(tiny_mask_model.checkpoint), **overrides
    )
    g = np.random.default_rng(0)
    images = [read_image(str(p), "BGR") for p in tiny_mask_model.val_images]
    images += [g.integers(0, 256, (*size, 3), dtype=np.uint8) for size in [(150, 230), (257, 190)]]
    counts, ious, onnx_time = [], [], 0.0
    for bgr in images:
        expected = predictor(bgr)
        start = time.perf_counter()
        found = onnx_predictor(bgr)
        onnx_time += time.perf_counter() - start
        parity = compare_detections(
            instances_as_arrays(expected),
            (found.boxes, found.scores, found.classes),
            max_detections=100,
            nms_thresh=0.5,
        )
        assert parity.ok and parity.matched == len(expected), parity
        assert found.masks.shape == (len(found), *bgr.shape[:2]) and found.masks.dtype == bool
        assert found.masks.any(axis=(1, 2)).mean() > 0.5  # masks, not empty pictures
        first, second = zip(*parity.pairs)
        iou = mask_iou(expected.pred_masks.numpy()[list(first)], found.masks[list(second)])
        assert iou.min() >= 0.99, iou.min()
        counts.append(len(found))
        ious.extend(iou.tolist())
    assert len(set(counts)) > 2 and 0 < min(counts) and max(counts) < 100, counts
    assert sum(ious) / len(ious) > 0.999
    print(
        f"mask parity on {len(images)} images: detections {counts}, pasted mask IoU min "
        f"{min(ious):.4f}; onnxruntime + pasting {onnx_time / len(images) * 1000:.0f} ms/image"
    )


def test_mask_demo_and_predictor_without_torch(tiny_mask_model, tiny_mask_onnx, tmp_path):
    from pycocotools import mask as mask_util

    path = tiny_mask_model.val_images[2]
    demo = load_tool("demo")
    args = ["--onnx", str(tiny_mask_onnx[0]), "--input", str(path), "--output", str(tmp_path)]
    assert demo.main([*args, "--confidence-threshold", "0.0"]) == 0
    found = OnnxPredictor(tiny_mask_onnx[0])(str(path))
    results = json.loads((tmp_path / f"{path.stem}.json").read_text())
    assert len(results) == len(found) > 0
    for r, mask in zip(results, found.masks):
        np.testing.assert_array_equal(mask_util.decode(r["segmentation"]).astype(bool), mask)
    # The masks are pasted in numpy: a process without torch gets the same ones.
    code = (
        "import sys\n"
        "import numpy as np\n"
        "for name in ('torch', 'torchvision', 'detectron2'):\n"
        "    sys.modules[name] = None\n"
        "from dyhead_d2.deploy import OnnxPredictor\n"
        f"found = OnnxPredictor({str(tiny_mask_onnx[0])!r})({str(path)!r})\n"
        f"np.save({str(tmp_path / 'masks.npy')!r}, found.masks)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=tool_env(tiny_mask_model.checkpoint.parent),
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "masks.npy"), found.masks)
