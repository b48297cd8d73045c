"""dyhead_d2.deploy: ONNX export of DyHead (every offset mode, both ways of writing the deformable
convolution: ONNX DeformConv and the sampled gathers), the numpy-only predictor's resizing and
coordinates, the parity check, and the export's clear errors.

The full detectors' parity (quickstart at several sizes, R-50 at 800x1216) is in
test_deploy_detectors.py (slow)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import onnx  # the test extra installs the deploy extra
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from dyhead_d2.deploy.metadata import resized_shape
from dyhead_d2.deploy.parity import compare_detections
from dyhead_d2.layers import DyHead
from dyhead_d2.layers.offset_modes import OFFSET_MODES

from . import needs_detectron2


class PyramidDyHead(torch.nn.Module):
    """(1, C, H, W) -> DyHead on the 3-level pyramid of stride-2 subsamplings (ceil sizes)."""

    def __init__(self, offset_mode: str):
        super().__init__()
        self.dyhead = DyHead(
            8,
            8,
            1,
            offset_mode=offset_mode,
            dcn_bias=True,
            zero_init_offset=False,
            init_style="authors",
            norm_groups=4,
            deform_impl="sampled",
        )
        with torch.no_grad():  # offsets of a few pixels: samples cross borders and levels
            for block in self.dyhead.blocks:
                block.offset_conv.weight.mul_(20.0)

    def forward(self, x):
        levels = [x]
        for _ in range(2):
            levels.append(F.max_pool2d(levels[-1], 1, stride=2))
        return tuple(self.dyhead(levels))


def export(module, example, path, deform_op, names=("x",)):
    needs_detectron2()  # dyhead_d2.deploy.export builds detectors with detectron2
    from dyhead_d2.deploy.export import DEFORM_OPS, deform_conv_export

    with warnings.catch_warnings(), deform_conv_export(module, deform_op):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=DEFORM_OPS[deform_op],
            input_names=list(names),
            dynamic_axes={names[0]: {2: "h", 3: "w"}},
        )
    onnx.checker.check_model(str(path), full_check=True)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


DEFORM_OPS = ("DeformConv", "gather")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(deform_op, offset_mode) -> (the PyTorch module, onnxruntime session of its export at
    16x24, the file)."""
    out = {}
    for deform_op in DEFORM_OPS:
        for mode in OFFSET_MODES:
            torch.manual_seed(0)  # the same weights for every mode
            model = PyramidDyHead(mode).eval()
            path = tmp_path_factory.mktemp("dyhead_onnx") / f"{deform_op}_{mode}.onnx"
            session = export(model, torch.randn(1, 8, 16, 24), path, deform_op)
            assert all(b.deform_impl == "sampled" for b in model.dyhead.blocks)  # restored
            out[deform_op, mode] = model, session, path
    return out


@pytest.mark.parametrize("deform_op", DEFORM_OPS)
@pytest.mark.parametrize("offset_mode", OFFSET_MODES)
def test_dyhead_exports_for_every_offset_mode(deform_op, offset_mode, exported):
    model, session, path = exported[deform_op, offset_mode]
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    ops = [n.op_type for n in graph.node]
    assert "Loop" not in ops
    if deform_op == "DeformConv":  # one per level and branch: 3 mid, 2 low, 2 high
        assert ops.count("DeformConv") == 7
    else:  # the gather-sum is Gather + MatMul
        assert "DeformConv" not in ops and "Gather" in ops
    # Other sizes than the traced one, odd ones too (where "official" reads scrambled rows).
    for size in [(16, 24), (13, 19), (21, 10), (7, 7)]:
        x = torch.randn(1, 8, *size)
        with torch.no_grad():
            expected = model(x)
        got = session.run(None, {"x": x.numpy()})
        for level, (e, g) in enumerate(zip(expected, got)):
            assert g.shape == tuple(e.shape), (size, level)
            np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-4, err_msg=f"{size}")


@pytest.mark.parametrize("deform_op", DEFORM_OPS)
def test_offset_modes_differ_in_the_exported_graphs(deform_op, exported):
    """The export follows the mode: the same weights give other outputs per mode."""
    x = torch.randn(1, 8, 13, 19).numpy()
    outs = {mode: exported[deform_op, mode][1].run(None, {"x": x})[0] for mode in OFFSET_MODES}
    assert np.abs(outs["official"] - outs["topleft"]).max() > 1e-3
    assert np.abs(outs["aligned"] - outs["topleft"]).max() > 1e-3
    assert np.abs(outs["mmdet_main_slice"] - outs["official"]).max() > 1e-3


@pytest.mark.parametrize(
    "size", [(480, 640), (640, 480), (600, 600), (333, 1999), (1999, 333), (801, 799), (10, 20)]
)
def test_resized_shape_is_detectron2s(size):
    needs_detectron2()
    from detectron2.data import transforms as T

    for short, max_size in [(800, 1333), (256, 256), (0, 1333), (512, 10_000)]:
        aug = T.ResizeShortestEdge(short, max_size)
        image = np.zeros((*size, 3), dtype=np.uint8)
        transform = aug.get_transform(image)
        expected = transform.apply_image(image).shape[:2]
        spec = {"type": "shortest_edge", "short_edge": short, "max_size": max_size, "interp": 2}
        assert resized_shape(*size, spec) == expected, (size, short, max_size)


def test_onnx_predictor_imports_without_torch_or_detectron2():
    code = (
        "import sys\n"
        "for name in ('torch', 'torchvision', 'detectron2'):\n"
        "    sys.modules[name] = None  # any import of them fails\n"
        "import dyhead_d2\n"
        "from dyhead_d2.deploy import OnnxPredictor, Detections, paste_masks\n"
        "from dyhead_d2.deploy.parity import compare_detections\n"
        "print('imported', OnnxPredictor.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "imported OnnxPredictor" in out.stdout


@pytest.mark.parametrize("mask_size", [28, 14])
def test_paste_masks_is_detectron2s(mask_size):
    # Against Detectron2's paste_masks_in_image on boxes as a detector gives them: clipped to the
    # image, fractional, from sub-pixel to larger than the mask grid, at the image's borders.
    needs_detectron2()
    from detectron2.layers.mask_ops import paste_masks_in_image

    from dyhead_d2.deploy import paste_masks

    g = np.random.default_rng(mask_size)
    differing = total = 0
    for height, width in [(37, 53), (128, 96), (240, 320)]:
        n = 40
        # Smooth probabilities (many values near the 0.5 threshold) and random ones.
        yy, xx = np.mgrid[:mask_size, :mask_size] / (mask_size - 1)
        centres = g.uniform(0.2, 0.8, (n // 2, 2, 1, 1))
        smooth = 1 - np.hypot(yy - centres[:, 0], xx - centres[:, 1]) * 1.6
        masks = np.concatenate([smooth, g.random((n - n // 2, mask_size, mask_size))])
        masks = masks.astype(np.float32)
        x0, y0 = g.uniform(-10, width, n), g.uniform(-10, height, n)
        sizes = np.exp(g.uniform(np.log(0.3), np.log(1.5 * max(height, width)), (2, n)))
        boxes = np.stack([x0, y0, x0 + sizes[0], y0 + sizes[1]], axis=1).astype(np.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        masks, boxes = masks[keep], boxes[keep]
        ours = paste_masks(masks, boxes, height, width)
        theirs = paste_masks_in_image(
            torch.from_numpy(masks), torch.from_numpy(boxes), (height, width)
        ).numpy()
        assert ours.shape == theirs.shape == (len(masks), height, width) and ours.dtype == bool
        assert theirs.any(axis=(1, 2)).mean() > 0.5 and theirs.sum() > 1000  # not all empty
        differing += int((ours != theirs).sum())
        total += ours.size
    # The same sampling in float32: at most a rounding flip at the threshold, here none.
    assert differing <= total * 1e-6, (differing, total)


def test_paste_masks_edge_cases():
    from dyhead_d2.deploy import paste_masks

    assert paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)), 5, 7).shape == (0, 5, 7)
    # A mask of ones on a box of whole pixels fills exactly its pixels, nothing around them.
    out = paste_masks(np.ones((1, 28, 28)), np.array([[2.0, 1.0, 6.0, 4.0]]), 5, 7)
    want = np.zeros((5, 7), dtype=bool)
    want[1:4, 2:6] = True
    np.testing.assert_array_equal(out[0], want)
    with pytest.raises(ValueError, match=r"square masks"):
        paste_masks(np.ones((1, 28, 14)), np.zeros((1, 4)), 5, 7)
    with pytest.raises(ValueError, match=r"\(2, 4\) boxes for 2 masks"):
        paste_masks(np.ones((2, 28, 28)), np.zeros((1, 4)), 5, 7)


def _dets(boxes, scores, classes):
    return (
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(scores, dtype=np.float32),
        np.asarray(classes, dtype=np.int64),
    )


def test_compare_detections():
    a = _dets([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], [0.9, 0.8, 0.3], [1, 2, 1])
    # Same detections in another order, within tolerance.
    b = _dets([[5, 5, 20.005, 20], [0, 0, 10, 10], [1, 1, 4, 4]], [0.80005, 0.9, 0.3], [2, 1, 1])
    parity = compare_detections(a, b)
    assert parity.ok and parity.matched == 3
    assert parity.max_box_diff == pytest.approx(0.005, abs=1e-6)
    assert parity.max_score_diff == pytest.approx(5e-5, abs=1e-6)
    # A box 0.02 px off, another class, a score 2e-4 off, one detection fewer: each fails.
    for bad in (
        _dets([[0, 0, 10, 10], [5, 5, 20.02, 20], [1, 1, 4, 4]], [0.9, 0.8, 0.3], [1, 2, 1]),
        _dets([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], [0.9, 0.8, 0.3], [1, 3, 1]),
        _dets([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], [0.9, 0.8002, 0.3], [1, 2, 1]),
        _dets([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.8], [1, 2]),
    ):
        assert not compare_detections(a, bad).ok
    # At the max_detections cut, a different last detection of (nearly) the same score is fine,
    # but not one of a clearly higher score.
    c = _dets([[0, 0, 10, 10], [5, 5, 20, 20], [7, 7, 9, 9]], [0.9, 0.8, 0.30005], [1, 2, 1])
    assert compare_detections(a, c, max_detections=3).ok
    assert not compare_detections(a, c).ok
    d = _dets([[0, 0, 10, 10], [50, 5, 60, 20], [1, 1, 4, 4]], [0.9, 0.8, 0.3], [1, 2, 1])
    assert not compare_detections(a, d, max_detections=3).ok
    # One run kept a box the other suppressed, at IoU 0.6 with a better box of its class.
    e = _dets([[0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 10, 6]], [0.9, 0.8, 0.5], [1, 2, 1])
    parity = compare_detections(a[:2] + (a[2],), e, nms_thresh=0.6)
    assert parity.unmatched == ([2], [2]) and not parity.ok  # the [1, 1, 4, 4] box is not that
    f = _dets([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.8], [1, 2])
    assert not compare_detections(f, e, nms_thresh=0.6).ok  # counts differ
    e2 = _dets([[0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 10, 6.0]], [0.9, 0.8, 0.5], [1, 2, 1])
    g = _dets([[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 40]], [0.9, 0.8, 0.2], [1, 2, 1])
    parity = compare_detections(e2, g, nms_thresh=0.6, max_detections=3)
    assert parity.at_nms_threshold == 1 and parity.at_cut == 1 and parity.ok, parity
    assert not compare_detections(e2, g, nms_thresh=0.5, max_detections=3).ok


def test_deform_conv_symbolic_is_torchvisions_op(tmp_path):
    """torchvision's deform_conv2d -> DeformConv with stride, padding, dilation, weight groups
    and offset groups as given, with and without a mask, against torchvision itself; some
    samples fall exactly on pixels, many outside the image."""
    needs_detectron2()
    import torchvision

    from dyhead_d2.deploy.export import deform_conv_export

    class Op(torch.nn.Module):
        def __init__(self, use_mask: bool, **kwargs):
            super().__init__()
            self.use_mask, self.kwargs = use_mask, kwargs

        def forward(self, x, offset, mask, weight, bias):
            mask = mask if self.use_mask else None
            return torchvision.ops.deform_conv2d(x, offset, weight, bias, mask=mask, **self.kwargs)

    g = torch.Generator().manual_seed(0)
    cases = [  # (use_mask, conv arguments, weight groups, offset groups)
        (True, dict(stride=1, padding=1), 1, 1),
        (True, dict(stride=2, padding=1), 1, 1),
        (False, dict(stride=(1, 2), padding=(2, 0), dilation=(2, 1)), 1, 1),
        (True, dict(stride=1, padding=1), 2, 2),
    ]
    names = ["x", "offset", "mask", "weight", "bias"]
    for i, (use_mask, kwargs, groups, offset_groups) in enumerate(cases):
        op = Op(use_mask, **kwargs)
        x = torch.randn(1, 4, 9, 11, generator=g)
        weight = torch.randn(6, 4 // groups, 3, 3, generator=g)
        ho, wo = F.conv2d(x, weight, groups=groups, **kwargs).shape[-2:]
        offset = 4 * torch.randn(1, 18 * offset_groups, ho, wo, generator=g)
        offset[:, :4] = offset[:, :4].round()  # integer offsets: samples exactly on pixels
        mask = torch.rand(1, 9 * offset_groups, ho, wo, generator=g)
        args = (x, offset, mask, weight, torch.randn(6, generator=g))
        path = str(tmp_path / f"op{i}.onnx")
        with warnings.catch_warnings(), deform_conv_export(op):
            warnings.simplefilter("ignore")
            torch.onnx.export(op, args, path, dynamo=False, opset_version=19, input_names=names)
        assert [n.op_type for n in onnx.load(path).graph.node] == ["DeformConv"], kwargs
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        used = {i.name for i in session.get_inputs()}  # without a mask: no mask input
        feed = {n: a.numpy() for n, a in zip(names, args) if n in used}
        got = session.run(None, feed)[0]
        np.testing.assert_allclose(got, op(*args).numpy(), atol=1e-4, err_msg=str(kwargs))


def test_gather_export_refuses_torchvision_with_what_to_set():
    needs_detectron2()
    from dyhead_d2.deploy.export import ExportError, check_exportable

    for impl, refused in (("torchvision", True), ("sampled", False), ("auto", False)):
        model = DyHead(
            8,
            8,
            1,
            offset_mode="official",
            dcn_bias=True,
            zero_init_offset=False,
            init_style="authors",
            norm_groups=4,
            deform_impl=impl,
        )
        check_exportable(model, "DeformConv")  # exports every implementation
        if not refused:
            check_exportable(model, "gather")
            continue
        with pytest.raises(ExportError, match="deform_impl=sampled.*'DeformConv'"):
            check_exportable(model, "gather")
    with pytest.raises(ExportError, match="unknown deform_op 'Conv'"):
        check_exportable(model, "Conv")


def test_onnx_predictor_says_when_onnxruntime_lacks_deform_conv(tmp_path, monkeypatch):
    """onnxruntime < 1.25 has no DeformConv kernel: the error says what to do instead."""
    from dyhead_d2.deploy import OnnxPredictor

    def session(*args, **kwargs):  # what onnxruntime 1.24 raises for the default export
        raise RuntimeError(
            "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
            "DeformConv(19) node with name '/model/DeformConv'"
        )

    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    monkeypatch.setattr(ort, "InferenceSession", session)
    with pytest.raises(RuntimeError, match="upgrade onnxruntime.*--deform-op gather"):
        OnnxPredictor(path)
