"""tools/visualize_attention.py: the pictures are written, and the numbers drawn (scale-aware
weights, DyReLU coefficients, sampling locations) are those recomputed here from the first
block's parameters and the FPN outputs; the recorder changes no result."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from PIL import Image  # noqa: E402
from torchvision.ops import deform_conv2d  # noqa: E402

from dyhead_d2 import DyHead  # noqa: E402
from dyhead_d2.layers.recorder import DyHeadRecorder  # noqa: E402

from .tool_entry import load_tool  # noqa: E402

LEVELS = ("p3", "p4", "p5", "p6", "p7")


@pytest.fixture(scope="module")
def tool():
    return load_tool("visualize_attention")


def hard_sigmoid(z):
    return (z + 3.0).clamp(0.0, 6.0) / 6.0


@torch.no_grad()
def first_block_by_hand(block, feats, offset_mode):
    """Scale weights (levels, 3: low, mid, high), DyReLU coefficients (levels, 4, C) and the
    offsets/masks of one block, from its parameters with torch.nn.functional and torchvision."""
    assert offset_mode == "aligned"  # the quickstart's: coarser (i, j) reads finer (2i, 2j)
    p = dict(block.named_parameters())
    num_levels = len(feats)
    scales = np.full((num_levels, 3), np.nan)
    coefficients, offsets, masks = [], [], []
    for level, x in enumerate(feats):
        om = F.conv2d(x, p["offset_conv.weight"], p["offset_conv.bias"], padding=1)
        off, mask = om[:, :18], torch.sigmoid(om[:, 18:])
        offsets.append(off)
        masks.append(mask)

        def branch(name, inp, o, m, stride):
            y = deform_conv2d(
                inp, o, p[f"{name}.conv.weight"], p[f"{name}.conv.bias"], stride, 1, mask=m
            )
            return F.group_norm(y, 16, p[f"{name}.norm.weight"], p[f"{name}.norm.bias"])

        branches = {"mid": branch("conv_mid", x, off, mask, 1)}
        if level > 0:
            branches["low"] = branch("conv_low", feats[level - 1], off, mask, 2)
        if level < num_levels - 1:
            h, w = feats[level + 1].shape[-2:]
            o, m = off[..., ::2, ::2][..., :h, :w], mask[..., ::2, ::2][..., :h, :w]
            high = branch("conv_high", feats[level + 1], o, m, 1)
            size = x.shape[-2:]
            branches["high"] = F.interpolate(high, size, mode="bilinear", align_corners=True)
        fused = 0.0
        for k, name in enumerate(("low", "mid", "high")):
            if name in branches:
                pooled = branches[name].mean(dim=(2, 3), keepdim=True)
                z = F.conv2d(pooled, p["scale_attn.conv.weight"], p["scale_attn.conv.bias"])
                weight = hard_sigmoid(torch.relu(z))
                scales[level, k] = weight.item()
                fused = fused + branches[name] * weight
        fused = fused / len(branches)
        hidden = torch.relu(
            F.linear(fused.mean(dim=(2, 3)), p["task_attn.fc1.weight"], p["task_attn.fc1.bias"])
        )
        coef = hard_sigmoid(F.linear(hidden, p["task_attn.fc2.weight"], p["task_attn.fc2.bias"]))
        a1, b1, a2, b2 = coef[0].view(4, -1)
        coefficients.append(torch.stack([(a1 - 0.5) * 2 + 1, b1 - 0.5, (a2 - 0.5) * 2, b2 - 0.5]))
    return scales, torch.stack(coefficients).numpy(), offsets, masks


def test_pictures_and_the_numbers_they_show(tool, tiny_model, tmp_path, capsys):
    image_path = tiny_model.val_images[1]
    out = tmp_path / "attention"
    args = ["--input", str(image_path), "--output", str(out), "--block", "0", "--level", "p3"]
    args += ["--num-points", "4", *tiny_model.overrides]
    args.append(f"train.init_checkpoint={tiny_model.checkpoint}")
    # The layout of the reference below: channels-last kernels round otherwise (~1e-5 relative,
    # grown by the lively weights), which is not what this test is about.
    args.append("model.backbone.memory_format=contiguous")
    assert tool.main(["--config-file", tiny_model.config, *args]) == 0
    pictures = ["scale_attention.png", "offsets_block0_p3.png", "dyrelu_block0.png"]
    printed = capsys.readouterr().out
    for name in pictures:
        assert f"wrote {out / name}" in printed
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and min(picture.size) > 300
    data = np.load(out / "attention.npz")

    # The model's input and its FPN levels, computed here: the image in BGR, normalised, at its
    # own size (the quickstart's test loader does not resize; 192 needs no padding to 64).
    model = tiny_model.build()
    bgr = np.asarray(Image.open(image_path).convert("RGB"))[:, :, ::-1]
    divisor = model.backbone.size_divisibility
    assert bgr.shape[0] % divisor == 0 and bgr.shape[1] % divisor == 0
    x = torch.as_tensor(bgr.transpose(2, 0, 1).copy()).float()[None]
    x = (x - model.pixel_mean) / model.pixel_std
    with torch.no_grad():
        pyramid = model.backbone.fpn(x)
    feats = [pyramid[name] for name in LEVELS]
    dyhead = model.backbone.dyhead
    scales, coefficients, offsets, masks = first_block_by_hand(
        dyhead.blocks[0], feats, dyhead.offset_mode
    )

    assert data["scale"].shape == (2, 5, 3) and data["dyrelu"].shape == (2, 5, 4, 64)
    np.testing.assert_array_equal(np.isnan(data["scale"][0]), np.isnan(scales))
    np.testing.assert_allclose(data["scale"][0], scales, rtol=0, atol=1e-5)
    assert np.nanstd(scales) > 0.05  # not all at the floor: a comparison that can fail
    np.testing.assert_allclose(data["dyrelu"][0], coefficients, rtol=0, atol=1e-5)
    assert np.isnan(data["scale"][1]).sum() == 2  # block 1: P3 has no low, P7 no high

    # Sampling locations of the mid conv of block 0 on P3 (stride 8, image not resized).
    points = data["points"]
    assert len(points) == 4 and int(data["stride"]) == 8
    for p, (i, j) in enumerate(points):
        for k in range(9):
            ki, kj = divmod(k, 3)
            dy, dx = offsets[0][0, 2 * k, i, j].item(), offsets[0][0, 2 * k + 1, i, j].item()
            y, x_ = i - 1 + ki + dy, j - 1 + kj + dx
            expected = ((x_ + 0.5) * 8, (y + 0.5) * 8)
            np.testing.assert_allclose(data["sampling"][p, k], expected, rtol=0, atol=1e-4)
            grid = ((j - 1 + kj + 0.5) * 8, (i - 1 + ki + 0.5) * 8)
            np.testing.assert_allclose(data["grid"][p, k], grid, rtol=0, atol=1e-6)
            assert math.isclose(data["modulation"][p, k], masks[0][0, k, i, j].item(), abs_tol=1e-6)
    assert np.abs(data["sampling"] - data["grid"]).max() > 1.0  # the offsets are not zero


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--level", "p9"], "--level p9: the levels are p3, p4, p5, p6, p7"),
        (["--block", "2"], "--block 2: the DyHead has blocks 0..1"),
    ],
)
def test_mistakes_end_in_one_line(extra, message, tool, tiny_model, tmp_path, capsys):
    args = ["--config-file", tiny_model.config, "--input", str(tiny_model.val_images[0])]
    args += ["--output", str(tmp_path), *extra, *tiny_model.overrides]
    args.append(f"train.init_checkpoint={tiny_model.checkpoint}")
    assert tool.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"visualize_attention.py: error: {message}"]


def test_missing_image_is_one_line(tool, tiny_model, tmp_path, capsys):
    args = ["--config-file", tiny_model.config, "--input", str(tmp_path / "nope.jpg")]
    assert tool.main([*args, "--output", str(tmp_path), *tiny_model.overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"visualize_attention.py: error: input image '{tmp_path / 'nope.jpg'}' does not exist"
    ]


def test_recorder_changes_nothing_on_either_path():
    feats = [torch.randn(2, 16, 12, 13), torch.randn(2, 16, 6, 7), torch.randn(2, 16, 3, 4)]
    records = {}
    for deform_impl in ("torchvision", "sampled"):
        torch.manual_seed(0)
        neck = DyHead(
            16,
            16,
            2,
            offset_mode="official",
            dcn_bias=True,
            zero_init_offset=False,
            init_style="mmdet",
            deform_impl=deform_impl,
        )
        with torch.no_grad():
            for p in neck.parameters():
                p.add_(torch.randn_like(p) * 0.1)
            plain = neck(feats)
            with DyHeadRecorder(neck) as rec:
                recorded = neck(feats)
            after = neck(feats)  # hooks removed: this call records nothing
        for a, b, c in zip(plain, recorded, after):
            assert torch.equal(a, b) and torch.equal(a, c)
        offset, mask = neck.blocks[0].offset_and_mask(feats[0])
        torch.testing.assert_close(rec.blocks[0].offset[0], offset.detach())
        torch.testing.assert_close(rec.blocks[0].mask[0], mask.detach())
        records[deform_impl] = rec

    # The fused path calls the hooked modules in another interleaving; same values.
    for per_level, fused in zip(records["torchvision"].blocks, records["sampled"].blocks):
        assert [sorted(s) for s in per_level.scale] == [
            ["high", "mid"],
            ["high", "low", "mid"],
            ["low", "mid"],
        ]
        for level in range(3):
            torch.testing.assert_close(per_level.offset[level], fused.offset[level])
            for name, weight in per_level.scale[level].items():
                assert weight.shape == (2,)
                torch.testing.assert_close(weight, fused.scale[level][name], atol=1e-5, rtol=0)
            for a, b in zip(per_level.dyrelu[level], fused.dyrelu[level]):
                assert a.shape == (2, 16)
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    a1, b1, a2, b2 = records["sampled"].blocks[1].dyrelu[0]
    assert (a1 >= 0).all() and (a1 <= 2).all() and (a2.abs() <= 1).all()
    assert (b1.abs() <= 0.5).all() and (b2.abs() <= 0.5).all() and not torch.equal(a1[0], a1[1])
