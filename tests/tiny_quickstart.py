"""The quickstart shrunk to seconds, for the tests of train_net.py and the tools (needs detectron2).

``TINY``: the quickstart config on 16 + 8 synthetic images with one DyHead block;
:func:`run_train_net` runs ``train_net.py`` as a user does; :func:`make_tiny_model` (the
``tiny_model`` fixture of ``conftest.py``) is the quickstart model with ``TINY_TOOLS`` (two DyHead
blocks), randomly initialised and then given livelier weights: the quickstart zero-initialises the
offsets and starts the classifier at a 1% prior, which would leave nothing to see (no offsets, no
detections). Saved with Detectron2's checkpointer, as training would. The ``tiny_mask_model``
fixture is the same for the mask quickstart (Mask R-CNN), livened by :func:`make_rcnn_lively`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog

from dyhead_d2.config import dataset_names, load_config

from .d2_models import unregister_datasets

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "configs/quickstart/atss_dyhead_synthetic.py"

# The quickstart shrunk to seconds: 16 training and 8 val images, one DyHead block.
TINY = [
    "dataloader.train.dataset.names.num_train=16",
    "dataloader.train.dataset.names.num_val=8",
    "dataloader.test.dataset.names.num_train=16",
    "dataloader.test.dataset.names.num_val=8",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "model.backbone.dyhead.num_blocks=1",
    "train.log_period=1",
]
TINY_TOOLS = [*TINY, "model.backbone.dyhead.num_blocks=2"]


def run_train_net(args, tmp_path, timeout=600, wait=True, threads=1):
    """``train_net.py ARGS`` in a subprocess (cwd the checkout, data under ``tmp_path``): the
    finished process, or with ``wait=False`` the running one (stdout and stderr merged)."""
    env = dict(
        os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS=str(threads)
    )
    cmd = [sys.executable, "train_net.py", *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def printed_ap(log: str) -> dict[str, str]:
    """The last AP table ``print_csv_format`` printed in ``log``: metric name -> value as printed
    ("nan" where a size range has no object)."""
    # Its copy-paste lines: a header of metric names, then their values.
    names = re.findall(r"copypaste: (AP,AP50.*)", log)
    values = re.findall(r"copypaste: ([0-9.,na]+)\n", log)
    assert names and values, log[-3000:]
    return dict(zip(names[-1].split(","), values[-1].split(",")))


@dataclass
class TinyModel:
    config: str  # path of the config file
    overrides: list[str]  # TINY_TOOLS
    checkpoint: Path
    val_images: list[Path]  # the synthetic val split's image files, in id order
    cfg: object  # the loaded config (train.init_checkpoint set)

    def build(self):
        """The model with the checkpoint's weights, in eval mode on the CPU."""
        model = instantiate(self.cfg.model).eval()
        DetectionCheckpointer(model).load(str(self.checkpoint))
        return model


@torch.no_grad()
def make_lively(model, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)

    def noise(p, std):
        p.add_(torch.randn(p.shape, generator=g) * std)

    for block in model.backbone.dyhead.blocks:
        noise(block.offset_conv.weight, 0.05)  # offsets of about a pixel
        noise(block.offset_conv.bias, 0.5)
        noise(block.scale_attn.conv.weight, 0.5)
        block.scale_attn.conv.bias.fill_(1.0)  # weights spread over (0.5, 1) instead of 0.5
        for fc in (block.task_attn.fc1, block.task_attn.fc2):
            noise(fc.weight, 0.3)
            noise(fc.bias, 0.5)
    if hasattr(model, "head"):  # ATSS (make_rcnn_lively livens Mask R-CNN's heads)
        model.head.cls_logits.bias.zero_()  # probabilities around 0.5: plenty of detections


MASK_QUICKSTART = "configs/quickstart/mask_rcnn_dyhead_synthetic.py"


@torch.no_grad()
def make_rcnn_lively(model, seed: int = 0) -> None:
    """For the mask quickstart (Mask R-CNN): DyHead as :func:`make_lively`; a classifier x8
    sharper, so that random boxes pass the score threshold with well-spread scores (x20 turns
    float rounding into score differences above 1e-4); mask logits of a few units, so that a
    binary mask is not decided by rounding around probability 0.5."""
    make_lively(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    model.roi_heads.box_predictor.cls_score.weight.mul_(8.0)
    predictor = model.roi_heads.mask_head.predictor
    predictor.weight.copy_(torch.randn(predictor.weight.shape, generator=g) * 0.5)


def make_tiny_model(
    tmp: Path, config: str = QUICKSTART, lively: Callable = make_lively
) -> Iterator[TinyModel]:
    """Yield the :class:`TinyModel` of ``config`` (with ``TINY_TOOLS``, given weights by
    ``lively``) saved under ``tmp``; ``$DETECTRON2_DATASETS`` points at its data (under ``tmp``)
    until the generator is closed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(tmp / "datasets"))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.chdir(ROOT)
        unregister_datasets()
        cfg = load_config(config, TINY_TOOLS)
        torch.manual_seed(0)
        model = instantiate(cfg.model)
        lively(model)
        DetectionCheckpointer(model, save_dir=str(tmp)).save("tiny")
        checkpoint = tmp / "tiny.pth"
        cfg.train.init_checkpoint = str(checkpoint)
        (val,) = dataset_names(cfg.dataloader.test.dataset.names)
        image_root = Path(MetadataCatalog.get(val).image_root)
        images = sorted(image_root.glob("*.jpg"))
        assert images, f"no synthetic images in {image_root}"
        yield TinyModel(config, list(TINY_TOOLS), checkpoint, images, cfg)
        unregister_datasets()


def tool_env(tmp_root: Path) -> dict:
    """Environment of a tool subprocess that uses the tiny model's data."""
    return dict(
        os.environ,
        DETECTRON2_DATASETS=str(tmp_root / "datasets"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
