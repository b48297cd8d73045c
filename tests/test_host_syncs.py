"""Host reads (device synchronisations) per training step and per image, counted on the CPU
with :class:`~tests.cuda_proxies.DeviceSyncCounter` as a CUDA device would make them."""

import torch

from . import needs_detectron2

needs_detectron2()

from detectron2.config import instantiate  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from dyhead_d2.config import load_config  # noqa: E402
from dyhead_d2.layers import DyHead  # noqa: E402

from .cuda_proxies import DeviceSyncCounter  # noqa: E402
from .d2_models import make_input  # noqa: E402
from .tiny_quickstart import (  # noqa: E402
    QUICKSTART,
    ROOT,
    TINY,
    make_lively,  # noqa: E402
)


def quickstart_on_cuda_settings(num_blocks=2):
    """The quickstart model as it runs on a CUDA device: deform_impl "auto" is torchvision's op
    there; lively weights, so that there are positives, candidates and detections."""
    overrides = [
        *TINY,
        f"model.backbone.dyhead.num_blocks={num_blocks}",
        "+model.backbone.dyhead.deform_impl=torchvision",
    ]
    cfg = load_config(str(ROOT / QUICKSTART), overrides)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    make_lively(model)
    return model


def batch(n=2):
    """Detectron2's data loader gives uint8 images (whose finiteness needs no check)."""
    inputs = []
    for i in range(n):
        x = make_input(192, 192, [[10, 12, 80, 90], [100, 20, 180, 110]], [1, 3], seed=i)
        x["image"] = x["image"].to(torch.uint8)
        inputs.append(x)
    return inputs


def test_one_host_read_per_training_step():
    for num_blocks in (1, 3):
        model = quickstart_on_cuda_settings(num_blocks).train()
        inputs = batch()
        counter = DeviceSyncCounter()
        with EventStorage() as storage, counter:
            counter.mark(model, inputs)
            losses = model(inputs)
            sum(losses.values()).backward()
        # The number of positives (for the event storage) read with every DyHead block's
        # finite check; nothing in the losses, nothing per block, nothing in the backward.
        assert len(counter.syncs) == 1, counter.syncs
        assert "_read_with_finite_checks" in counter.syncs[0]
        assert storage.history("num_pos_anchors").latest() > 0


def test_dyhead_alone_reads_once_per_forward():
    torch.manual_seed(0)
    tower = DyHead(16, 16, 4, port="authors", deform_impl="torchvision")
    feats = [torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4)]
    counter = DeviceSyncCounter()
    with counter:
        counter.mark(tower, feats)
        sum(o.sum() for o in tower(feats)).backward()
    assert len(counter.syncs) == 1 and "raise_if_non_finite" in counter.syncs[0], counter.syncs


def test_inference_reads_once_per_image_before_nms_none_per_level():
    model = quickstart_on_cuda_settings().eval()
    inputs = [{"image": x["image"]} for x in batch(3)]
    counter = DeviceSyncCounter()
    with torch.no_grad(), counter:
        counter.mark(model, inputs)
        results = model(inputs)
    assert all(len(r["instances"]) > 0 for r in results)
    sites = [s.split("(", 1)[1] for s in counter.syncs]
    # Per forward: the DyHead check. Per image: keeping the candidates, the class counts of the
    # per-class NMS, then an NMS per class and Detectron2's postprocessing (clip + nonempty).
    assert sum("_read_with_finite_checks" in s for s in sites) == 1
    assert sum("inference_single_image" in s for s in sites) == 3
    assert sum("_per_class_nms" in s for s in sites) == 3
    # Nothing while the candidates of the levels are selected and decoded.
    assert counter.within("decode_candidates") == []
    # Per image: the one compaction, then the NMS (class counts + one NMS per class present).
    nms = counter.within("_per_class_nms")
    assert len(nms) == 3 + sum("torchvision.nms" in s for s in nms)
    assert len(counter.within("inference_single_image")) == 3 + len(nms)
