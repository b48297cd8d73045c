"""tools/convert_checkpoint.py: converts a tiny authors' file for a tiny config, refuses a broken
one with every problem, and picks the config of each released checkpoint by default."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from detectron2.config import LazyConfig, instantiate  # noqa: E402

from dyhead_d2.checkpoint import DyHeadCheckpointer  # noqa: E402
from dyhead_d2.checkpoint.release_configs import (  # noqa: E402
    dcn_bias_overrides,
    default_config,
)
from dyhead_d2.cli import build_model  # noqa: E402
from dyhead_d2.model_zoo import get_config_file  # noqa: E402

from .checkpoint_layouts import Randn, authors_tower_and_head  # noqa: E402
from .tool_entry import load_tool, tool_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOL = tool_path("convert_checkpoint")

# A LazyConfig of a tiny ATSS + DyHead (caffe-style ResNet, 32 channels, one block).
TINY_CONFIG = """
from tests.d2_models import tiny_atss_config

model = tiny_atss_config(num_classes=3, num_blocks=1, bottom_up="resnet_caffe")
"""


@pytest.fixture(scope="module")
def tool():
    return load_tool("convert_checkpoint")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny config file and a checkpoint of it in the authors' layout."""
    monkeypatch.syspath_prepend(str(ROOT))
    config = tmp_path / "tiny.py"
    config.write_text(TINY_CONFIG)
    torch.manual_seed(0)
    source = instantiate(LazyConfig.load(str(config)).model)
    r = Randn(1)
    sd = {"backbone.backbone." + k: v for k, v in source.backbone.fpn.state_dict().items()}
    sd.update(authors_tower_and_head(r, 32, 1, 3, 5))
    path = tmp_path / "authors_tiny.pth"
    torch.save({"model": sd, "iteration": 89999}, path)
    return config, path, sd


def test_cli_converts_a_tiny_authors_file(tiny, tmp_path):
    config, path, sd = tiny
    out = tmp_path / "converted.pth"
    run = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--source",
            "authors",
            "--config-file",
            str(config),
            str(path),
            str(out),
        ],
        cwd=ROOT,
        # The tiny config imports this test package; the tool itself needs only the installed one.
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{len(sd)} checkpoint entries -> {len(sd)} model entries" in run.stdout
    saved = torch.load(out)
    assert saved["__author__"] == "authors: authors_tiny.pth"
    model = instantiate(LazyConfig.load(str(config)).model)
    model.load_state_dict(saved["model"], strict=True)
    dcn = model.backbone.dyhead.blocks[0].conv_low.conv.weight
    assert torch.equal(dcn, sd["backbone.dyhead_tower.0.DyConv.2.conv.weight"])

    # train.init_checkpoint=<the released file> gives the same model as the converted file.
    on_the_fly = instantiate(LazyConfig.load(str(config)).model)
    DyHeadCheckpointer(on_the_fly).load(str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(on_the_fly.state_dict()[k], v), k


def test_cli_lists_every_problem(tool, tiny, tmp_path, capsys):
    config, path, sd = tiny
    del sd["head.scales.4.scale"]
    sd["backbone.dyhead_tower.0.DyConv.3.conv.weight"] = torch.zeros(32, 32, 3, 3)
    torch.save({"model": sd}, path)
    out = tmp_path / "converted.pth"
    assert tool.main(["--config-file", str(config), str(path), str(out)]) == 1
    err = capsys.readouterr().err
    assert "(2 problems)" in err
    assert "no rule for checkpoint key backbone.dyhead_tower.0.DyConv.3.conv.weight" in err
    assert "model key not filled by the checkpoint: head.scales.4.scale" in err
    assert not out.exists()


def test_cli_refuses_a_backbone_file(tool, tmp_path, capsys):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1)}, path)
    assert tool.main([str(path), str(tmp_path / "out.pth")]) == 2
    assert "detected: torchvision" in capsys.readouterr().err


def keys(*names):
    return {n: torch.zeros(1) for n in names}


@pytest.mark.parametrize(
    "source, state_dict, config",
    [
        (
            "authors",
            keys("backbone.dyhead_tower.0.offset.weight", "head.cls_logits.weight"),
            "atss_dyhead_R_50_caffe_FPN_1x.py",
        ),
        ("authors", keys("head.cls_subnet.0.weight"), "retinanet_dyhead_R_50_caffe_FPN_1x.py"),
        (
            "authors",
            keys("roi_heads.box_head.fc1.weight"),
            "faster_rcnn_dyhead_R_50_caffe_FPN_1x.py",
        ),
        (
            "authors",
            keys("backbone.backbone.bottom_up.patch_embed.proj.weight"),
            "atss_dyhead_swin_T_FPN_2x_ms.py",
        ),
        (
            "mmdet",
            {"bbox_head.atss_cls.weight": torch.zeros(80, 256, 3, 3)},
            "atss_dyhead_R_50_FPN_1x.py",
        ),
        (
            "mmdet",
            {"bbox_head.atss_cls.weight": torch.zeros(80, 256, 1, 1)},
            "atss_dyhead_R_50_caffe_FPN_1x_mmdet.py",
        ),
        (
            "mmdet",
            keys("backbone.patch_embed.projection.weight"),
            "atss_dyhead_swin_L_FPN_2x_ms.py",
        ),
    ],
)
def test_default_config_per_released_checkpoint(source, state_dict, config):
    assert default_config(source, state_dict) == f"COCO/{config}"
    assert Path(get_config_file(default_config(source, state_dict))).is_file()
    assert (ROOT / "configs" / "COCO" / config).is_file()


def test_mmdet_file_with_dcn_biases_builds_the_model_with_them():
    sd = {
        "bbox_head.atss_cls.weight": torch.zeros(80, 256, 1, 1),
        "neck.1.dyhead_blocks.0.spatial_conv_mid.conv.weight": torch.zeros(256, 256, 3, 3),
    }
    assert dcn_bias_overrides("mmdet", sd, ["a=1"]) == ["a=1"]
    sd["neck.1.dyhead_blocks.0.spatial_conv_mid.conv.bias"] = torch.zeros(256)
    opts = dcn_bias_overrides("mmdet", sd, ["a=1"])
    assert opts == ["a=1", "model.backbone.dyhead.dcn_bias=True"]
    # The override builds the MMDetection config's DCNs with a bias, whose keys the file fills.
    model = build_model(str(ROOT / "configs/COCO/atss_dyhead_R_50_caffe_FPN_1x_mmdet.py"), opts[1:])
    assert model.backbone.dyhead.blocks[5].conv_high.conv.bias.shape == (256,)
    # A user's explicit choice is kept.
    explicit = ["model.backbone.dyhead.dcn_bias=False"]
    assert dcn_bias_overrides("mmdet", sd, explicit) == explicit
    assert dcn_bias_overrides("authors", sd, []) == []
