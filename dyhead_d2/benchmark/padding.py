"""Benchmark (g): what padding the images to a multiple of 128 costs against 32 (needs
detectron2).

``model.backbone.size_divisibility`` is 128 (the largest stride, P7's) in the authors' and
MMDetection's reproduction configs, so that every pyramid level is exactly half the previous one,
and 32 in MMDetection's "simple" config. Same detector as (c), same weights, both paddings,
interleaved: inference on one ``--detector-size`` image (prepared as ``Predictor`` prepares it)
and one training step on that image.
"""

from __future__ import annotations

import torch

from .timing import compare
from .towers import autocast_ctx, parse_size, repeats_of

__all__ = ["PADDINGS", "padding_cost"]

PADDINGS = (32, 128)


def padding_cost(builder, args, device, report) -> None:
    """(g/inference) and (g/train): the time and memory of each padding; the ratio is the time
    with 128 over the time with 32."""
    from detectron2.utils.events import EventStorage

    from dyhead_d2.modeling import fold_frozen_batchnorm

    size = parse_size(args.detector_size)
    infer, train, padded = {}, {}, []
    for pad in PADDINGS:
        name = f"pad {pad}"
        model, make_inputs = builder(args.impl, size_divisibility=pad)
        model = fold_frozen_batchnorm(model.to(device).eval(), inplace=True)
        inputs = [{"image": x["image"].to(device)} for x in make_inputs(1, size)]
        with torch.no_grad():
            h, w = model.preprocess_image(inputs).tensor.shape[-2:]
        padded.append(f"{name} -> {h}x{w}")

        def run_inference(model=model, inputs=inputs):
            with torch.no_grad(), autocast_ctx(args, device):
                return model(inputs)

        infer[name] = run_inference

        model, make_inputs = builder(args.impl, size_divisibility=pad)
        model.to(device).train()
        batch = make_inputs(1, size)
        for x in batch:
            x["image"] = x["image"].to(device)
            x["instances"] = x["instances"].to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # every repeat sees equal weights

        def run_step(model=model, batch=batch, opt=opt):
            opt.zero_grad(set_to_none=True)
            with EventStorage(), autocast_ctx(args, device):
                losses = model(batch)
            sum(losses.values()).backward()
            opt.step()

        train[name] = run_step
    sizes = ", ".join(padded)
    title = f"padding (ATSS + DyHead R-50), 1 image {args.detector_size}: {sizes}"
    report("g/inference", f"{title}; inference", compare(infer, device, **repeats_of(args)), {})
    report("g/train", f"{title}; training step", compare(train, device, **repeats_of(args)), {})
