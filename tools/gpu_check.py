#!/usr/bin/env python
"""A device check in one run and one table: CUDA tests, deform_impl, speed, memory, agreement.

For the R-50 reproduction detector (configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py) with random,
trained-like weights (see dyhead_d2.engine.device_check), it prints: the CUDA tests (passed of
collected; they skip without a GPU); the DyHead tower (6 blocks, 256 ch, an 800x1216 image's
P3..P7) and the detector (1 image 800x1333), forward and forward + backward, deform_impl
"torchvision" vs "sampled", with the max |difference| between the two; a training iteration of
Detectron2's trainer (4 images 800x1333, the config's SGD) in float32 and with AMP (AMPTrainer:
float16 + GradScaler on CUDA; bfloat16 autocast on CPU): s/iteration and peak
torch.cuda.max_memory_allocated; inference, batch 1 800x1333, images/s in float32 and AMP; the
detections of one image on the CPU (torchvision's op) vs the device (deform_impl "auto"). The
timing helpers are tools/benchmark.py's. MMDetection's published figures (13.2 img/s, 5.4 GB;
V100-class GPUs, 4 GPUs x 4 images, their protocol) stand beside ours for scale only.

    python tools/gpu_check.py                        # on the GPU, full sizes (a few minutes)
    python tools/gpu_check.py --device cpu --small   # tiny sizes: ~25 CPU-seconds

README.md ("GPU check") says how to carry detectron2 and its wheels to a bare device machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path[:0] = [TOOLS, ROOT]

import benchmark as bm  # noqa: E402  (tools/benchmark.py)
from detectron2.config import instantiate  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from dyhead_d2.engine import device_check as dc  # noqa: E402
from dyhead_d2.engine import load_config  # noqa: E402

# Option: (full size, --small). The full sizes are issue 15's; the small ones run on CPU.
# fmt: off
SIZES = {
    "tower_size": ("800x1216", "128x192"), "tower_blocks": (6, 2), "tower_channels": (256, 64),
    "detector_size": ("800x1333", "128x192"), "train_size": ("800x1333", "128x192"),
    "train_images": (4, 2), "repeats": (5, 1), "warmup": (2, 0),
}
# fmt: on
CHECKS = {
    "a": "tower forward",
    "b": "tower forward+backward",
    "c": "detector forward",
    "d": "detector forward+backward",
}


def detector_forward_backward(args, device, build, report) -> None:
    """Like benchmark.py's (d) training step, minus the optimizer and its per-box assignment."""
    runs, losses, grads = {}, {}, {}
    for name, impl in (("reference", "torchvision"), ("project", "sampled")):
        model, make_inputs = build(impl)
        model.to(device).train()
        inputs = [{k: v.to(device) for k, v in x.items()}
                  for x in make_inputs(1, bm.parse_size(args.detector_size))]  # fmt: skip

        def run(model=model, inputs=inputs, name=name):
            model.zero_grad(set_to_none=True)
            with EventStorage():
                out = model(inputs)
            sum(out.values()).backward()
            losses[name] = [v.detach().reshape(1) for v in out.values()]
            grads[name] = [p.grad for p in model.parameters() if p.grad is not None]

        runs[name] = run
    timings = bm.compare(runs, device, args.repeats, args.warmup)
    diffs = {"losses": bm.max_abs_diff(losses["project"], losses["reference"]),
             "gradients": bm.max_abs_diff(grads["project"], grads["reference"])}  # fmt: skip
    report("d", f"1 image {args.detector_size}", timings, diffs)


def deform_impl_rows(args, device, build) -> list[dc.Row]:
    """deform_impl "torchvision" (benchmark.py's reference) vs "sampled", tower and detector."""
    rows: list[dc.Row] = []
    ns = argparse.Namespace(channels=args.tower_channels, blocks=args.tower_blocks, levels=5,
                            batch=1, offset_mode="official", impl="sampled", dtype="float32",
                            repeats=args.repeats, warmup=args.warmup,
                            detector_size=args.detector_size)  # fmt: skip
    tower = f"{args.tower_blocks} blocks {args.tower_channels} ch, {args.tower_size} image"

    def report(key, title, timings, diffs):  # benchmark.py's reporter interface
        where = tower if key in "ab" else title.split(", ")[-1]
        for name, t in timings.items():
            impl = "torchvision" if name == "reference" else "sampled"
            rows.append(dc.Row(CHECKS[key], f"{impl}, {where}", t.median, "s"))
        for what, (diff, rel) in diffs.items():
            rows.append(dc.Row(f"{CHECKS[key]} agreement", f"{what}, sampled vs torchvision",
                               diff, "max|diff|", note=f"relative {rel:.1e}"))  # fmt: skip

    ref, new = bm.build_towers(ns, device)
    feats = bm.make_features(ns, bm.parse_size(args.tower_size), device)
    bm.tower_forward(ref, new, feats, ns, device, report)
    bm.tower_forward_backward(ref, new, feats, ns, device, report)
    del ref, new, feats
    bm.detector_inference(build, ns, device, report)
    detector_forward_backward(args, device, build, report)
    return rows


def main(argv=None) -> list[dc.Row]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny sizes: a CPU run of the whole check")
    for key, (full, small) in SIZES.items():
        help = f"default {full} ({small} with --small)"
        p.add_argument("--" + key.replace("_", "-"), type=type(full), default=None, help=help)
    p.add_argument("--skip-tests", action="store_true", help="do not run the CUDA tests")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    for key, sizes in SIZES.items():
        if getattr(args, key) is None:
            setattr(args, key, sizes[args.small])
    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {device} ({device_name}); torch {torch.__version__}; cuDNN TF32 "
        f"{torch.backends.cudnn.allow_tf32}, matmul TF32 {torch.backends.cuda.matmul.allow_tf32}; "
        f"{torch.get_num_threads()} CPU threads",
        flush=True,
    )
    build = bm.detector_builder("official")
    model, make_inputs = build("sampled")  # trained-like weights, made once on the CPU
    state = dc.trained_like_state(model, make_inputs(1, bm.parse_size(SIZES["detector_size"][1])))

    def build_trained_like(impl):
        model, make_inputs = build(impl)
        model.load_state_dict(state)
        return model, make_inputs

    cfg = load_config(os.path.join(ROOT, bm.DETECTOR_CONFIG))

    def make_optimizer(model):  # the reproduction config's SGD
        cfg.optimizer.params.model = model
        return instantiate(cfg.optimizer)

    size = bm.parse_size
    sections = {
        "cuda tests": lambda: dc.cuda_test_rows(ROOT),
        "deform_impl": lambda: deform_impl_rows(args, device, build_trained_like),
        "speed": lambda: dc.speed_rows(
            build_trained_like,
            make_optimizer,
            device,
            args.train_images,
            size(args.train_size),
            size(args.detector_size),
            args.repeats,
            args.warmup,
        ),
        "detections": lambda: dc.detection_rows(
            build_trained_like, device, size(args.detector_size)
        ),
    }
    if args.skip_tests:
        del sections["cuda tests"]
    rows: list[dc.Row] = []
    for name, section in sections.items():
        done = len(rows)
        dc.guarded(rows, name, section)
        for r in rows[done:]:  # as it goes: a run cut short still shows what it measured
            print(f"[{name}] {r.check}, {r.setting}: {r.value} {r.unit} {r.note}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump([dataclasses.asdict(r) for r in rows], f, indent=2)
    print(dc.format_table(rows))
    print(
        "Published: MMDetection's ATSS + DyHead R-50 reproduction setting on V100-class GPUs; "
        f"measured here on {device_name}. Different GPUs and protocols: for scale only."
    )
    return rows


if __name__ == "__main__":
    main()
