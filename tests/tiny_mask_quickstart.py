"""The mask quickstart (Mask R-CNN + DyHead) shrunk for the tool and export tests, with weights
that detect: the ATSS tiny model's overrides (16 + 8 synthetic images, two DyHead blocks), livelier
DyHead attentions, a sharper classifier (random boxes pass the score threshold with well-spread
scores) and a mask predictor whose probabilities are spread out from 0.5 (so that a binary mask
is not decided by rounding). Saved with Detectron2's checkpointer, as training would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog

from dyhead_d2.engine import load_config
from dyhead_d2.engine.checks import dataset_names

from .d2_models import unregister_datasets
from .test_train_net import ROOT
from .tiny_quickstart import TINY_TOOLS, TinyModel, make_lively

MASK_QUICKSTART = "configs/quickstart/mask_rcnn_dyhead_synthetic.py"


@torch.no_grad()
def make_rcnn_lively(model, seed: int = 0) -> None:
    """DyHead as :func:`make_lively`; then a classifier x8 sharper (x20 turns float rounding into
    score differences above 1e-4) and mask logits of a few units."""
    make_lively(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    model.roi_heads.box_predictor.cls_score.weight.mul_(8.0)
    predictor = model.roi_heads.mask_head.predictor
    predictor.weight.copy_(torch.randn(predictor.weight.shape, generator=g) * 0.5)


@pytest.fixture(scope="module", name="tiny_mask_model")
def tiny_mask_model_fixture(tmp_path_factory):
    """``tiny_mask_model``: a :class:`~tests.tiny_quickstart.TinyModel` of the mask quickstart
    (import this into a test module to use it); ``$DETECTRON2_DATASETS`` points at its data
    while it is in use."""
    tmp = tmp_path_factory.mktemp("tiny_mask_quickstart")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(tmp / "datasets"))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.chdir(ROOT)
        unregister_datasets()
        cfg = load_config(MASK_QUICKSTART, TINY_TOOLS)
        torch.manual_seed(0)
        model = instantiate(cfg.model)
        make_rcnn_lively(model)
        DetectionCheckpointer(model, save_dir=str(tmp)).save("tiny_mask")
        checkpoint = tmp / "tiny_mask.pth"
        cfg.train.init_checkpoint = str(checkpoint)
        (val,) = dataset_names(cfg.dataloader.test.dataset.names)
        images = sorted(Path(MetadataCatalog.get(val).image_root).glob("*.jpg"))
        assert images
        yield TinyModel(MASK_QUICKSTART, list(TINY_TOOLS), checkpoint, images, cfg)
        unregister_datasets()
