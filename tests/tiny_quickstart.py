"""The quickstart model shrunk for the tool tests, with weights that make its internals visible.

The quickstart config with the ``TINY`` overrides of ``test_train_net`` (16 + 8 synthetic images)
and two DyHead blocks, randomly initialised and then given livelier weights: the quickstart
zero-initialises the offsets and starts the classifier at a 1% prior, which would leave nothing
to see (no offsets, no detections). Saved with Detectron2's checkpointer, as training would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog

from dyhead_d2.engine import load_config
from dyhead_d2.engine.checks import dataset_names

from .d2_models import unregister_datasets
from .test_train_net import QUICKSTART, ROOT, TINY

TINY_TOOLS = [*TINY, "model.backbone.dyhead.num_blocks=2"]


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
    if hasattr(model, "head"):  # ATSS (tests/tiny_mask_quickstart.py livens Mask R-CNN's heads)
        model.head.cls_logits.bias.zero_()  # probabilities around 0.5: plenty of detections


@pytest.fixture(scope="module", name="tiny_model")
def tiny_model_fixture(tmp_path_factory):
    """``tiny_model``: a :class:`TinyModel` (import this into a test module to use it);
    ``$DETECTRON2_DATASETS`` points at its data while it is in use."""
    tmp = tmp_path_factory.mktemp("tiny_quickstart")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(tmp / "datasets"))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.chdir(ROOT)
        unregister_datasets()
        cfg = load_config(QUICKSTART, TINY_TOOLS)
        torch.manual_seed(0)
        model = instantiate(cfg.model)
        make_lively(model)
        DetectionCheckpointer(model, save_dir=str(tmp)).save("tiny")
        checkpoint = tmp / "tiny.pth"
        cfg.train.init_checkpoint = str(checkpoint)
        (val,) = dataset_names(cfg.dataloader.test.dataset.names)
        image_root = Path(MetadataCatalog.get(val).image_root)
        images = sorted(image_root.glob("*.jpg"))
        assert images, f"no synthetic images in {image_root}"
        yield TinyModel(QUICKSTART, list(TINY_TOOLS), checkpoint, images, cfg)
        unregister_datasets()


def tool_env(tmp_root: Path) -> dict:
    """Environment of a tool subprocess that uses the tiny model's data."""
    return dict(
        os.environ,
        DETECTRON2_DATASETS=str(tmp_root / "datasets"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
