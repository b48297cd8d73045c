"""Benchmarks (c) and (d): the whole ATSS + DyHead R-50 detector, reference vs project (needs
detectron2): (c) inference on one image, (d) one training step, where the reference also assigns
anchors the authors' way (:func:`~dyhead_d2.atss.reference.atss_assign_per_box`).
"""

from __future__ import annotations

import torch

from ..atss.reference import atss_assign_per_box
from .timing import compare, max_abs_diff
from .towers import autocast_ctx, parse_size, repeats_of

__all__ = ["DETECTOR_CONFIG", "detector_builder", "detector_inference", "training_step"]

# A name of dyhead_d2.model_zoo (the reproduction setting).
DETECTOR_CONFIG = "COCO/atss_dyhead_R_50_caffe_FPN_1x.py"


def detector_builder(offset_mode: str = "official"):
    """``builder(deform_impl, memory_format="auto", size_divisibility=None) -> (model,
    make_inputs)`` for the authors' ATSS + DyHead R-50 (``memory_format`` and
    ``size_divisibility``: ``DyHeadBackbone``'s; None is the config's)."""
    from detectron2.config import instantiate
    from detectron2.structures import Boxes, Instances

    from dyhead_d2.model_zoo import get_config

    cfg = get_config(DETECTOR_CONFIG)
    cfg.model.backbone.dyhead.offset_mode = offset_mode

    def make_inputs(batch, size):
        g = torch.Generator().manual_seed(0)
        h, w = size
        inputs = []
        for _ in range(batch):
            xy = torch.rand(6, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
            wh = torch.rand(6, 2, generator=g) * 0.3 * torch.tensor([w, h]) + 8
            inst = Instances(size)
            inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
            inst.gt_classes = torch.randint(0, 80, (6,), generator=g)
            image = torch.randint(0, 256, (3, h, w), generator=g).float()
            inputs.append({"image": image, "instances": inst})
        return inputs

    default_padding = cfg.model.backbone.size_divisibility

    def build(deform_impl, memory_format="auto", size_divisibility=None):
        cfg.model.backbone.dyhead.deform_impl = deform_impl
        cfg.model.backbone.memory_format = memory_format
        cfg.model.backbone.size_divisibility = size_divisibility or default_padding
        torch.manual_seed(0)  # same weights for both
        return instantiate(cfg.model), make_inputs

    return build


def detector_inference(builder, args, device, report) -> None:
    """(c) one image (800x1216 by default) through the full detector, reference vs project.

    The project's model is prepared as :class:`~dyhead_d2.Predictor` prepares it (frozen
    BatchNorm folded) and runs with the config's ``memory_format`` ("auto": channels-last on
    the CPU); the reference is the authors' model as written (contiguous memory, unfolded).
    """
    from dyhead_d2.modeling import fold_frozen_batchnorm

    runs, features = {}, {}
    for name, impl in (("reference", "torchvision"), ("project", args.impl)):
        if name == "reference":
            model, make_inputs = builder(impl, memory_format="contiguous")
            model.to(device).eval()
        else:
            model, make_inputs = builder(impl)
            model = fold_frozen_batchnorm(model.to(device).eval(), inplace=True)
        size = parse_size(args.detector_size)
        inputs = [{"image": x["image"].to(device)} for x in make_inputs(1, size)]
        with torch.no_grad(), autocast_ctx(args, device):
            images = model.preprocess_image(inputs)
            features[name] = [f.float() for f in model.backbone(images.tensor).values()]

        def run(model=model, inputs=inputs):
            with torch.no_grad(), autocast_ctx(args, device):
                return model(inputs)

        runs[name] = run
    diffs = {"DyHead outputs": max_abs_diff(features["reference"], features["project"])}
    title = f"detector inference (ATSS + DyHead R-50), 1 image {args.detector_size}"
    report("c", title, compare(runs, device, **repeats_of(args)), diffs)


def training_step(builder, args, device, report) -> None:
    """(d) one training step (forward, backward, SGD step) on two images (512x512 by default).

    The reference also assigns anchors the authors' way, one ground-truth box at a time.
    """
    from detectron2.utils.events import EventStorage

    runs, losses, grads = {}, {}, {}
    for name, impl in (("reference", "torchvision"), ("project", args.impl)):
        model, make_inputs = builder(impl, "contiguous" if name == "reference" else "auto")
        model.to(device).train()
        inputs = make_inputs(2, parse_size(args.train_size))
        for x in inputs:
            x["image"] = x["image"].to(device)
            x["instances"] = x["instances"].to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every repeat sees equal weights
        if name == "reference":
            model.assigner = atss_assign_per_box  # the authors' loop, one ground truth at a time
        with EventStorage(), autocast_ctx(args, device):
            out = model(inputs)
        sum(out.values()).backward()
        losses[name] = [v.detach().float().reshape(1) for v in out.values()]
        grads[name] = [p.grad.float() for p in model.parameters() if p.grad is not None]
        model.zero_grad(set_to_none=True)

        def run(model=model, inputs=inputs, opt=opt):
            opt.zero_grad(set_to_none=True)
            with EventStorage(), autocast_ctx(args, device):
                out = model(inputs)
            sum(out.values()).backward()
            opt.step()

        runs[name] = run
    diffs = {
        "losses": max_abs_diff(losses["reference"], losses["project"]),
        "gradients": max_abs_diff(grads["reference"], grads["project"]),
    }
    title = f"training step (ATSS + DyHead R-50), 2 images {args.train_size}"
    report("d", title, compare(runs, device, **repeats_of(args)), diffs)
