"""tools/analyze_model.py: deformable convolutions are counted, by a formula checked here against
the layer shapes; parameters are the model's; the neck / original-head comparison is printed."""

import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from detectron2.config import instantiate  # noqa: E402
from torchvision.ops import deform_conv2d  # noqa: E402

from dyhead_d2.analysis.flops import module_flops  # noqa: E402
from dyhead_d2.analysis.model_report import analyze  # noqa: E402
from dyhead_d2.config import load_config  # noqa: E402

from .tiny_quickstart import QUICKSTART, ROOT, TINY_TOOLS  # noqa: E402
from .tool_entry import load_tool  # noqa: E402

SIZE = 256  # a synthetic image; a multiple of 128, so not padded: P3..P7 are 32x32 .. 2x2


@pytest.fixture(scope="module")
def tool():
    return load_tool("analyze_model")


@pytest.fixture(scope="module")
def tiny(monkeypatch_module):
    monkeypatch_module.chdir(ROOT)
    monkeypatch_module.setenv("OMP_NUM_THREADS", "1")
    cfg = load_config(QUICKSTART, TINY_TOOLS)
    report = analyze(cfg, SIZE, SIZE)
    return load_config(QUICKSTART, TINY_TOOLS), report


def dcn_flops(c_in, c_out, out_h, out_w, k=3, groups=1, mask=True):
    """A modulated deformable conv: a plain conv's multiply-adds, plus, per sampled value,
    4 multiply-adds of bilinear interpolation and 1 of modulation."""
    taps = out_h * out_w * k * k
    return taps * c_out * (c_in // groups) + taps * c_in * (4 + int(mask))


def test_deformable_convs_are_counted_from_the_layer_shapes(tiny):
    cfg, report = tiny
    model = instantiate(cfg.model)
    blocks = model.backbone.dyhead.blocks
    sizes = [SIZE // s for s in (8, 16, 32, 64, 128)]
    expected = 0
    for block in blocks:
        for name in ("conv_mid", "conv_low", "conv_high"):
            c_out, c_in, kh, kw = getattr(block, name).conv.weight.shape
            assert (kh, kw) == (3, 3)
            # mid: every level at its own size; low (stride 2): levels 1.. at their size, from
            # the finer level; high: levels ..L-2, computed at the coarser level's size.
            outputs = {"conv_mid": sizes, "conv_low": sizes[1:], "conv_high": sizes[1:]}[name]
            expected += sum(dcn_flops(c_in, c_out, s, s) for s in outputs)
    assert len(blocks) == 2 and expected > 0
    assert report.by_operator["deform_conv2d"] == expected
    assert report.neck.flops > expected  # plus offset convs, GroupNorm, upsampling, DyReLU
    assert [s[-1] for s in report.levels] == sizes


def test_handle_counts_groups_strides_and_plain_deform_convs():
    class Deform(torch.nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.mask = mask
            self.weight = torch.nn.Parameter(torch.randn(6, 4 // 2, 3, 3))

        def forward(self, x, offset, mask):
            return deform_conv2d(
                x, offset, self.weight, stride=2, padding=1, mask=mask if self.mask else None
            )

    x = torch.randn(1, 4, 9, 7)
    offset = torch.randn(1, 18, 5, 4)
    mask = torch.rand(1, 9, 5, 4)
    for with_mask in (True, False):
        # torchvision infers groups from the weight: 4 input channels, 2 per group.
        counted = module_flops(Deform(with_mask), (x, offset, mask)).by_operator()
        assert counted["deform_conv2d"] == dcn_flops(4, 6, 5, 4, groups=2, mask=with_mask)


def test_parameters_are_the_models(tiny):
    cfg, report = tiny
    model = instantiate(cfg.model)
    assert report.total.params == sum(p.numel() for p in model.parameters())
    rows = dict(report.rows)
    assert rows["backbone.dyhead"].params == sum(
        p.numel() for p in model.backbone.dyhead.parameters()
    )
    assert report.neck.params == rows["backbone.dyhead"].params
    assert report.total.flops == sum(report.by_operator.values())
    # ATSS's original head on 64 channels, 5 classes: 8 convs 3x3 + GroupNorm, 3x3 predictors
    # (5 + 4 + 1 outputs), one scale per level.
    c, k = 64, 5
    towers = 8 * (9 * c * c + c + 2 * c)
    predictors = 9 * c * (k + 4 + 1) + (k + 4 + 1)
    assert report.original_head.params == towers + predictors + 5


def test_prints_table_and_comparison(tool, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["--config-file", QUICKSTART, "--height", "200", "--width", "300", *TINY_TOOLS]
    assert tool.main(args) == 0
    out = capsys.readouterr().out
    assert "one 200x300 image (padded by the model to 256x320)" in out
    assert "backbone.dyhead" in out and "deform_conv2d" in out
    lines = [line.strip() for line in out.splitlines()]
    assert any(line.startswith("DyHead neck (2 blocks)") for line in lines)
    assert any(line.startswith("ATSS's original head (64 ch)") for line in lines)
    assert any(line.startswith("DyHead neck + head - original head:") for line in lines)


def test_missing_config_is_one_line(tool, capsys, tmp_path):
    assert tool.main(["--config-file", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("analyze_model.py: error: config file")
