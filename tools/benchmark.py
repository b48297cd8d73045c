#!/usr/bin/env python
"""Speed and memory of the DyHead neck: the project's implementation vs the reference.

The reference is the authors' algorithm as written: one level and one branch at a time with
``torchvision.ops.deform_conv2d`` (``DyHead(..., deform_impl="torchvision")``, i.e.
:meth:`DyHeadBlock.forward_per_level`). The project's implementation is the same module with
``deform_impl=--impl`` (default ``"auto"``: the fused, gather + GEMM path on CPU) and the same
weights. Both run in the same process, interleaved (ref, new, new, ref, ...), and each reported
time is the median over ``--repeats`` runs after ``--warmup`` runs, so load from other processes
hits both alike; compare the ratios, not the absolute times. Each time is also given as process
CPU time (all threads): where other jobs share the cores, wall time penalises multi-threaded code
more than single-threaded code, and the CPU-time ratio says how much work each side does.

On a machine shared with other jobs, set ``OMP_WAIT_POLICY=PASSIVE``: with the default
(spinning) policy every parallel op waits for a worker thread that another process holds the core
of, which costs the project's implementation (many parallel ops) far more than the reference
(whose torchvision kernels are single-threaded loops). The header line shows the policy in use.

Benchmarks (``--which``):

* ``a``: the DyHead tower forward (inference, under ``torch.no_grad``).
* ``b``: the tower forward + backward (gradients of the inputs and of every parameter).
* ``e``: the first block vs plain 3x3 convolutions of the same shapes, forward and forward +
  backward (gradients of inputs and weights on both sides):

  - ``e/block``: the whole block vs the same block in which each deformable conv is a plain
    ``F.conv2d`` (same weights, strides and padding), its output multiplied by the mean
    modulation mask so that the offset conv stays in the graph. Offset conv, GroupNorm,
    upsampling, attentions and DyReLU are on both sides.
  - ``e/guard``: the guard against non-finite offsets alone (the block's one check of all
    levels' offset_conv outputs, plus, on the per-level ``"torchvision"`` path, each deformable
    conv's sanitising of its offsets and masks) vs the whole block forward.
  - ``e/convs``: only the three deformable convs of every level (offsets/masks given, and
    differentiated in the backward run) vs the three plain convs of every level; no offset
    conv, normalisation or attention on either side.
* ``c``: full detector inference (``configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py``, random
  weights, same for both sides) on one 800x1216 image; the reported difference is that of the
  DyHead outputs.
* ``d``: one training step (forward, backward, SGD step) of that detector on two 512x512 images
  with six random boxes each; the reference also runs the authors' per-box ATSS assignment loop
  instead of the vectorised one. Differences of the losses and of all gradients are reported.
* ``f``: deployed inference on the CPU: the detector of (c) on one ``--detector-size`` image,
  three ways in one run: the reference (eager, ``deform_impl="torchvision"``), the project in
  PyTorch eager (``--impl``) and the project exported to ONNX (``dyhead_d2.deploy``) run by
  onnxruntime's CPU provider with as many threads as torch. The ratios are the reference's time
  over each; the differences are those of the detections of eager and onnxruntime. Needs the
  deploy extra (onnx, onnxruntime); the export takes a minute and is not timed.
  (``c``, ``d`` and ``f`` need detectron2; their sizes are ``--detector-size`` and
  ``--train-size``, and they ignore ``--sizes``, ``--blocks`` and ``--channels``.)

Peak memory (largest over the timed runs): on CUDA, ``torch.cuda.max_memory_allocated`` minus
the memory allocated before the run. On CPU, the peak resident set size of the process during the
run (Linux ``VmHWM``, reset before each run through ``/proc/self/clear_refs``) minus the resident
size just before it: the memory the run added. Memory the allocator kept from earlier runs is
reused without showing up, so this is coarser than the CUDA number (it can read 0). Where the
peak cannot be reset, the column shows ``n/a``. For (b), "saved for backward" is exact: the bytes
of the distinct storages autograd keeps from one forward for the backward (parameters included),
counted with ``torch.autograd.graph.saved_tensors_hooks``.

Example::

    python tools/benchmark.py --sizes 800x1216 --blocks 6 --which a,b,e --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dyhead_d2.layers import DyHead  # noqa: E402
from dyhead_d2.layers.deform_conv import guard_non_finite, resolve_deform_impl  # noqa: E402
from dyhead_d2.layers.finite import all_finite  # noqa: E402
from dyhead_d2.layers.offset_modes import read_high_branch_offset  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory above the level at ``start()``, in bytes (None where it cannot be measured)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0

    @staticmethod
    def _status_kib(key: str) -> int:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
            self.base = self._status_kib("VmRSS") * 1024
        except OSError:
            self.base = None

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self.base is None:
            return None
        return self._status_kib("VmHWM") * 1024 - self.base


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU time, all threads
    peak: int | None = None
    saved: int | None = None  # bytes kept by autograd for the backward, where measured

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds)


def compare(
    runs: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int
) -> dict[str, Timing]:
    """Time each callable; runs are interleaved, the order alternating between rounds."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    timings = {name: Timing() for name in names}
    mem = PeakMemory(device)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            mem.start()
            c0, t0 = time.process_time(), time.perf_counter()
            runs[name]()
            _sync(device)
            timings[name].seconds.append(time.perf_counter() - t0)
            timings[name].cpu_seconds.append(time.process_time() - c0)
            peak = mem.stop()
            if peak is not None:
                old = timings[name].peak
                timings[name].peak = peak if old is None else max(old, peak)
    return timings


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """Largest |a - b| over paired tensors, and the largest of |a - b| / max|b| per tensor."""
    diff = rel = 0.0
    for x, y in zip(a, b):
        d = (x.double() - y.double()).abs().max().item()
        diff = max(diff, d)
        rel = max(rel, d / max(y.double().abs().max().item(), 1e-30))
    return diff, rel


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


# ----------------------------------------------------------------------------------------------
# Inputs and models
# ----------------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def pyramid_sizes(image: tuple[int, int], levels: int, stride: int = 8) -> list[tuple[int, int]]:
    """P3.. sizes of an image: ceil(size / 8), then halved and rounded up per level (as FPN)."""
    h, w = math.ceil(image[0] / stride), math.ceil(image[1] / stride)
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def build_towers(args, device: torch.device) -> tuple[DyHead, DyHead]:
    """(reference, project): identical weights, different ``deform_impl``."""
    torch.manual_seed(0)
    kw = dict(
        offset_mode=args.offset_mode,
        dcn_bias=True,
        zero_init_offset=False,
        init_style="authors",
    )
    ref = DyHead(args.channels, args.channels, args.blocks, deform_impl="torchvision", **kw)
    with torch.no_grad():
        for block in ref.blocks:
            # Offsets of a pixel or two (a trained model's scale) instead of the near-zero init.
            block.offset_conv.weight.normal_(0.0, 0.05)
    new = DyHead(args.channels, args.channels, args.blocks, deform_impl=args.impl, **kw)
    new.load_state_dict(ref.state_dict())
    return ref.to(device), new.to(device)


def make_features(args, image, device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sizes = pyramid_sizes(image, args.levels)
    return [torch.randn(args.batch, args.channels, h, w, generator=g).to(device) for h, w in sizes]


def autocast_ctx(args, device):
    if args.dtype == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[args.dtype])


# ----------------------------------------------------------------------------------------------
# (a), (b): the tower
# ----------------------------------------------------------------------------------------------


def tower_forward(ref, new, feats, args, device, report) -> None:
    def run(model):
        with torch.no_grad(), autocast_ctx(args, device):
            return model(feats)

    t = compare({"reference": lambda: run(ref), "project": lambda: run(new)}, device, **_rep(args))
    report("a", "tower forward", t, {"outputs": max_abs_diff(run(new), run(ref))})


def tower_forward_backward(ref, new, feats, args, device, report) -> None:
    g = torch.Generator().manual_seed(2)
    cotangents = [torch.randn(f.shape, generator=g).to(device) for f in feats]

    def run(model):
        model.zero_grad(set_to_none=True)
        inputs = [f.detach().requires_grad_() for f in feats]
        with autocast_ctx(args, device):
            outs = model(inputs)
        # A mean-reduced loss, as in training, with random weights so every output matters.
        loss = sum((o.float() * c).mean() for o, c in zip(outs, cotangents))
        loss.backward()
        grads = [i.grad for i in inputs] + [p.grad for p in model.parameters()]
        return [o.detach() for o in outs], grads

    t = compare({"reference": lambda: run(ref), "project": lambda: run(new)}, device, **_rep(args))
    for name, model in (("reference", ref), ("project", new)):
        t[name].saved = saved_for_backward(model, feats, args, device)
    out_new, grad_new = run(new)
    out_ref, grad_ref = run(ref)
    report(
        "b",
        "tower forward + backward",
        t,
        {
            "outputs": max_abs_diff(out_new, out_ref),
            "gradients": max_abs_diff(grad_new, grad_ref),
        },
    )


def saved_for_backward(model, feats, args, device) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of one forward."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[(s.device, s.data_ptr())] = s.nbytes()
        return t

    inputs = [f.detach().requires_grad_() for f in feats]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast_ctx(args, device):
        model(inputs)
    return sum(storages.values())


# ----------------------------------------------------------------------------------------------
# (e): one block vs plain 3x3 convolutions of the same shapes
# ----------------------------------------------------------------------------------------------


def plain_branches(block, features, masks):
    """The three convolutions of every level as plain 3x3 ``F.conv2d`` (same weights/strides)."""
    mids, lows, highs = [], [], []
    last = len(features) - 1
    for i, x in enumerate(features):
        mids.append(_plain(block.conv_mid.conv, x, masks, i))
        lows.append(_plain(block.conv_low.conv, features[i - 1], masks, i) if i > 0 else None)
        if i < last:
            size = features[i + 1].shape[-2:]
            highs.append(_plain(block.conv_high.conv, features[i + 1], masks, i, size, block))
        else:
            highs.append(None)
    return mids, lows, highs


def _plain(conv, x, masks, level, high_size=None, block=None):
    out = F.conv2d(x, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)
    if masks is None:
        return out
    mask = masks[level]
    if high_size is not None:
        mask = read_high_branch_offset(mask, tuple(high_size), block.offset_mode, is_mask=True)
    return out * mask.mean(dim=1, keepdim=True)


def plain_block(block, features):
    offsets, masks = zip(*(block.offset_and_mask(x) for x in features))
    return block.fuse_levels(*plain_branches(block, features, masks))


def block_vs_plain(ref, new, feats, args, device, report) -> None:
    block = new.blocks[0]
    with torch.no_grad():
        om = [block.offset_and_mask(x) for x in feats]
    offsets = [o for o, _ in om]
    masks = [m for _, m in om]

    def deform_convs(inputs):
        # Offsets and masks are leaves here; in backward they get their gradients as in training.
        grad = torch.is_grad_enabled()
        off = [o.detach().requires_grad_(grad) for o in offsets]
        msk = [m.detach().requires_grad_(grad) for m in masks]
        mids, lows, highs = block.sampled_branches(inputs, off, msk)
        return [t for t in mids + lows + highs if t is not None]

    def plain_convs(inputs):
        mids, lows, highs = plain_branches(block, inputs, None)
        return [t for t in mids + lows + highs if t is not None]

    cases = {
        "block": (lambda i: block(i), lambda i: plain_block(block, i)),
        "convs": (deform_convs, plain_convs),
    }
    impl = resolve_deform_impl(block.deform_impl, device)
    guard_vs_block(block, feats, impl, args, device, report)
    for name, (deform, plain) in cases.items():
        for backward in (False, True):

            def run(fn, backward=backward):
                block.zero_grad(set_to_none=True)
                inputs = [f.detach().requires_grad_(backward) for f in feats]
                ctx = nullcontext() if backward else torch.no_grad()
                with ctx, autocast_ctx(args, device):
                    outs = fn(inputs)
                if backward:
                    torch.stack([o.float().sum() for o in outs]).sum().backward()

            runs = {
                "plain conv": lambda fn=plain, run=run: run(fn),
                f"deformable ({impl})": lambda fn=deform, run=run: run(fn),
            }
            t = compare(runs, device, **_rep(args))
            what = "forward + backward" if backward else "forward"
            report(f"e/{name}", f"one block vs plain convs: {name}, {what}", t, {})


def guard_vs_block(block, feats, impl, args, device, report) -> None:
    """(e/guard): the non-finite guard alone vs the block's forward.

    The guard is the block's check of every level's offset_conv output (one reduction per level,
    one host read) and, on the per-level ``"torchvision"`` path, the sanitising of offsets and
    masks in each of the three deformable convs of every level (counted on the full-size maps).
    """
    with torch.no_grad():
        raw = [block.offset_conv(x) for x in feats]
        om = [block.offset_and_mask(x) for x in feats]

    def guard():
        with torch.no_grad(), autocast_ctx(args, device):
            all_finite(raw)
            if impl == "torchvision":
                conv = block.conv_mid.conv
                for offset, mask in om:
                    for _ in range(3):
                        guard_non_finite(offset, mask, conv.bias, conv.weight)

    def forward():
        with torch.no_grad(), autocast_ctx(args, device):
            block(feats)

    t = compare({"block forward": forward, "guard": guard}, device, **_rep(args))
    report("e/guard", "the non-finite guard alone vs the block's forward", t, {})


def _rep(args) -> dict:
    return {"repeats": args.repeats, "warmup": args.warmup}


# ----------------------------------------------------------------------------------------------
# (c) detector inference, (d) training step: needs detectron2.
# ----------------------------------------------------------------------------------------------

DETECTOR_CONFIG = "configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py"


def atss_assign_per_box(anchors, num_anchors_per_level, gt_boxes, topk=9):
    """The authors' ATSS assignment, one ground-truth box at a time (the reference for (d))."""
    from torchvision.ops import box_iou

    matched = torch.full((len(anchors),), -1, dtype=torch.int64, device=anchors.device)
    best = torch.full((len(anchors),), -math.inf, device=anchors.device)
    ious = box_iou(anchors, gt_boxes)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    for j, box in enumerate(gt_boxes):
        dist = ((centers - (box[:2] + box[2:]) / 2) ** 2).sum(dim=1).sqrt()
        candidates, start = [], 0
        for n in num_anchors_per_level:
            k = min(topk, n)
            candidates.append(dist[start : start + n].topk(k, largest=False).indices + start)
            start += n
        cand = torch.cat(candidates)
        cand_iou = ious[cand, j]
        threshold = cand_iou.mean() + cand_iou.std()
        c = centers[cand]
        inside = torch.stack(
            [c[:, 0] - box[0], c[:, 1] - box[1], box[2] - c[:, 0], box[3] - c[:, 1]]
        )
        pos = cand[(cand_iou >= threshold) & (inside.min(dim=0).values > 0.01)]
        better = ious[pos, j] > best[pos]
        matched[pos[better]] = j
        best[pos[better]] = ious[pos[better], j]
    return matched


def detector_builder(offset_mode: str = "official"):
    """``builder(deform_impl) -> (model, make_inputs)`` for the authors' ATSS + DyHead R-50."""
    from detectron2.config import instantiate
    from detectron2.structures import Boxes, Instances

    from dyhead_d2.engine import load_config

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    cfg = load_config(os.path.join(root, DETECTOR_CONFIG))
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

    def build(deform_impl):
        cfg.model.backbone.dyhead.deform_impl = deform_impl
        torch.manual_seed(0)  # same weights for both
        return instantiate(cfg.model), make_inputs

    return build


def detector_inference(builder, args, device, report) -> None:
    """(c) one image (800x1216 by default) through the full detector, reference vs project."""
    runs, features = {}, {}
    for name, impl in (("reference", "torchvision"), ("project", args.impl)):
        model, make_inputs = builder(impl)
        model.to(device).eval()
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
    report("c", title, compare(runs, device, **_rep(args)), diffs)


def deployed_inference(args, device, report) -> None:
    """(f) reference vs project eager vs project in onnxruntime, one image, CPU."""
    import tempfile

    import onnxruntime as ort
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate

    from dyhead_d2.deploy.export import export_onnx
    from dyhead_d2.deploy.parity import compare_detections
    from dyhead_d2.engine import load_config

    if device.type != "cpu":
        print(f"\n(f) skipped on {device.type}: onnxruntime runs on the CPU here")
        return
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    cfg = load_config(os.path.join(root, DETECTOR_CONFIG))
    cfg.model.backbone.dyhead.offset_mode = args.offset_mode
    size = parse_size(args.detector_size)
    image = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(0)).float()
    models = {}
    for name, impl in (("reference", "torchvision"), ("project eager", args.impl)):
        cfg.model.backbone.dyhead.deform_impl = impl
        torch.manual_seed(0)  # same weights for all
        models[name] = instantiate(cfg.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        DetectionCheckpointer(models["project eager"], save_dir=tmp).save("weights")
        cfg.model.backbone.dyhead.deform_impl = "sampled"
        cfg.train.init_checkpoint = os.path.join(tmp, "weights.pth")
        path = export_onnx(cfg, os.path.join(tmp, "model.onnx"), verify=False).path
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def eager(model):
        with torch.no_grad():
            out = model([{"image": image}])[0]["instances"]
        return out.pred_boxes.tensor.numpy(), out.scores.numpy(), out.pred_classes.numpy()

    runs = {name: (lambda m=m: eager(m)) for name, m in models.items()}
    runs["onnxruntime"] = lambda: session.run(None, {"image": image.numpy()})
    timings = compare(runs, device, **_rep(args))
    parity = compare_detections(runs["project eager"](), runs["onnxruntime"](), max_detections=100)
    print(f"\n  detections, project eager vs onnxruntime: {parity}")
    diffs = {
        "detection boxes (eager vs onnxruntime)": (parity.max_box_diff, float("nan")),
        "detection scores (eager vs onnxruntime)": (parity.max_score_diff, float("nan")),
    }
    title = f"deployed inference (ATSS + DyHead R-50), 1 image {args.detector_size}"
    report("f", title, timings, diffs)


def training_step(builder, args, device, report) -> None:
    """(d) one training step (forward, backward, SGD step) on two images (512x512 by default).

    The reference also assigns anchors the authors' way, one ground-truth box at a time.
    """
    from detectron2.utils.events import EventStorage

    runs, losses, grads = {}, {}, {}
    for name, impl in (("reference", "torchvision"), ("project", args.impl)):
        model, make_inputs = builder(impl)
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
    report("d", title, compare(runs, device, **_rep(args)), diffs)


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def make_reporter(header: str, results: list):
    def report(key, title, timings: dict[str, Timing], diffs: dict) -> None:
        names = list(timings)
        print(f"\n({key}) {title}  [{header}]")
        width = max(len(n) for n in names)
        for n in names:
            t = timings[n]
            saved = "" if t.saved is None else f"   saved for backward {_mib(t.saved):>10}"
            print(
                f"  {n:<{width}}  {t.median:8.3f} s  (cpu {t.cpu_median:8.3f} s)"
                f"   peak {_mib(t.peak):>10}{saved}"
            )
        first, last = timings[names[0]], timings[names[-1]]
        if key.startswith("e/"):
            meaning = f"time of {names[-1]} / time of {names[0]}"
            ratio, cpu_ratio = last.median / first.median, last.cpu_median / first.cpu_median
            print(
                f"  ratio {names[-1]} / {names[0]}: {ratio:.3f}x the time "
                f"(cpu time: {cpu_ratio:.3f}x)"
            )
        else:
            meaning = "time of reference / time of project (speed-up)"
            for other in names[1:-1]:  # (f) has several project rows; the last is the fastest
                t = timings[other]
                print(
                    f"  ratio {names[0]} / {other}: {first.median / t.median:.2f}x faster "
                    f"(cpu time: {first.cpu_median / t.cpu_median:.2f}x)"
                )
            ratio, cpu_ratio = first.median / last.median, first.cpu_median / last.cpu_median
            print(
                f"  ratio {names[0]} / {names[-1]}: {ratio:.2f}x faster "
                f"(cpu time: {cpu_ratio:.2f}x)"
            )
        for what, (diff, rel) in diffs.items():
            relative = "" if math.isnan(rel) else f" (relative to the tensor's max: {rel:.1e})"
            print(f"  max abs diff of {what}: {diff:.2e}{relative}")
        results.append(
            {
                "benchmark": key,
                "setting": header,
                "seconds": {n: timings[n].median for n in names},
                "peak_bytes": {n: timings[n].peak for n in names},
                "saved_bytes": {n: timings[n].saved for n in names},
                "ratio": ratio,
                "cpu_time_ratio": cpu_ratio,
                "ratio_is": meaning,
                "max_abs_diff": {w: d for w, (d, _) in diffs.items()},
            }
        )

    return report


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["800x1216"], help="image sizes HxW")
    p.add_argument("--levels", type=int, default=5, help="pyramid levels from P3 (5: P3..P7)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--offset-mode", default="official")
    p.add_argument("--impl", default="auto", help="the project's deform_impl (auto|sampled|...)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="autocast dtype")
    p.add_argument("--device", nargs="+", default=None, help="default: cpu, and cuda if present")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--which", default="a,b,e", help="comma-separated subset of a,b,c,d,e,f")
    p.add_argument("--detector-size", default="800x1216", help="image HxW of (c)")
    p.add_argument("--train-size", default="512x512", help="image HxW of the two images of (d)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    which = [w.strip() for w in args.which.split(",") if w.strip()]
    results: list[dict] = []
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; reference = per level, per branch, "
        "torchvision.ops.deform_conv2d; times are medians"
    )
    for dev_name in devices:
        device = torch.device(dev_name)
        tower_benchmarks = [w for w in which if w not in ("c", "d", "f")]
        ref, new = build_towers(args, device) if tower_benchmarks else (None, None)
        for size in args.sizes if tower_benchmarks else []:
            image = parse_size(size)
            feats = make_features(args, image, device)
            levels = "..".join(f"{h}x{w}" for h, w in (f.shape[-2:] for f in feats))
            header = (
                f"{device.type} {args.dtype}, image {size}, levels {levels}, batch {args.batch}, "
                f"{args.blocks} blocks, {args.channels} ch, project deform_impl={args.impl!r} "
                f"-> {resolve_deform_impl(args.impl, device)!r}"
            )
            report = make_reporter(header, results)
            for w in which:
                if w == "a":
                    tower_forward(ref, new, feats, args, device, report)
                elif w == "b":
                    tower_forward_backward(ref, new, feats, args, device, report)
                elif w == "e":
                    block_vs_plain(ref, new, feats, args, device, report)
                elif w in ("c", "d", "f"):
                    continue  # once per device, below
                else:
                    p.error(f"unknown benchmark {w!r}")
        detector = [w for w in which if w in ("c", "d", "f")]
        if detector:
            header = (
                f"{device.type} {args.dtype}, project deform_impl={args.impl!r} "
                f"-> {resolve_deform_impl(args.impl, device)!r}"
            )
            report = make_reporter(header, results)
            builder = detector_builder(args.offset_mode)
            for w in detector:
                if w == "f":
                    deployed_inference(args, device, report)
                else:
                    step = detector_inference if w == "c" else training_step
                    step(builder, args, device, report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
