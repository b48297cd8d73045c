"""Measurements of a device check: what ``tools/gpu_check.py`` runs and prints as one table.

The check answers, on one accelerator and in one run: do the CUDA tests pass, how long do a
training step and an inference take, how much memory does training take, and does the device
compute the same detections as the CPU. The weights are random (the check downloads nothing),
made to behave like a trained detector's in the two ways that matter here:

* ResNet's FrozenBN layers get the statistics of their inputs (:func:`calibrate_batchnorm`), as a
  pretrained backbone has. With the init's identity statistics, activations grow through the
  residual stages (on a 256x384 random image, max |x| went from ~120 after the stem to ~1.3e4
  after res5), within a factor of 5 of float16's largest value (65504): AMP could overflow where
  a pretrained backbone would not.
* The class logits get a spread (:func:`spread_class_logits`): with the 1% prior and N(0, 0.01)
  weights every score is about 0.01, below the 0.05 test threshold, and there would be no
  detections to compare.

Device time is the scarce thing, so each section of a check records its failure as a table row
and the run goes on (:func:`guarded`).
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from detectron2.engine import SimpleTrainer
from detectron2.layers import FrozenBatchNorm2d
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from torch import nn

from ..deploy.parity import compare_detections as pair_detections
from ..engine.train_utils import build_trainer
from ..layers.deform_conv import resolve_deform_impl
from .timing import Measured, measure

__all__ = [
    "CUDA_MARKER",
    "Builder",
    "Measured",
    "Row",
    "PytestSummary",
    "amp_dtype",
    "calibrate_batchnorm",
    "compare_detections",
    "cuda_test_rows",
    "detection_rows",
    "format_table",
    "guarded",
    "make_trainer",
    "measure",
    "measure_inference",
    "measure_training",
    "run_pytest",
    "speed_rows",
    "spread_class_logits",
    "trained_like_state",
]

logger = logging.getLogger(__name__)

# The pytest marker of the project's tests that need a CUDA device (they skip without one).
CUDA_MARKER = "cuda"


@dataclass
class Row:
    """One line of the table. ``value`` None means "not measured" (the note says why)."""

    check: str
    setting: str
    value: float | None
    unit: str
    reference: str = ""
    note: str = ""


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table (values to 4 significant digits)."""
    header = ("check", "setting", "value", "unit", "published reference", "note")
    cells = [header] + [
        (
            r.check,
            r.setting,
            "n/a" if r.value is None else f"{r.value:.4g}",
            r.unit,
            r.reference,
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def guarded(rows: list[Row], check: str, section: Callable[[], list[Row]]) -> None:
    """Append ``section()``'s rows, or one row naming the error it raised."""
    try:
        rows.extend(section())
    except Exception as e:  # a failed section must not lose the device time the others took
        logger.exception("device check: section %r failed", check)
        rows.append(Row(check, "error", None, "", note=f"{type(e).__name__}: {e}"[:200]))


# ----------------------------------------------------------------------------------------------
# The CUDA tests
# ----------------------------------------------------------------------------------------------


@dataclass
class PytestSummary:
    collected: int
    passed: int
    failed: int
    errors: int
    skipped: int
    returncode: int
    output: str  # the end of pytest's output


def run_pytest(args: Iterable[str], root: str, timeout: float = 600.0) -> PytestSummary:
    """Run pytest with ``args`` (paths, node ids, options) in a fresh process (cwd ``root``);
    counts from its JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        proc = subprocess.run(
            [*cmd, *args], cwd=root, capture_output=True, text=True, timeout=timeout
        )
        output = (proc.stdout + proc.stderr)[-3000:]
        if not os.path.exists(xml):
            return PytestSummary(0, 0, 0, 0, 0, proc.returncode, output)
        suite = ET.parse(xml).getroot()
        if suite.tag == "testsuites":
            suite = suite[0]
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return PytestSummary(
        n["tests"], passed, n["failures"], n["errors"], n["skipped"], proc.returncode, output
    )


def cuda_test_rows(tests: str | None, timeout: float = 300.0) -> list[Row]:
    """The row of the tests marked :data:`CUDA_MARKER` under ``tests`` (a checkout's tests
    folder; the package does not ship its tests): passed of collected (all skip without a GPU).
    Without ``tests``, a row saying they were not run."""
    check = "cuda tests"
    if not tests:
        return [Row(check, "not run", None, "passed", "all pass", "no tests folder given")]
    path = os.path.abspath(tests)
    if not os.path.exists(path):
        raise FileNotFoundError(f"tests folder {tests!r} does not exist")
    s = run_pytest(["-m", CUDA_MARKER, path], os.path.dirname(path), timeout)
    if s.failed or s.errors or not s.collected:
        logger.warning("device check: the CUDA tests did not all pass:\n%s", s.output)
    return [
        Row(
            check,
            f"pytest -m {CUDA_MARKER} {tests} (exit {s.returncode})",
            s.passed,
            "passed",
            "all pass",
            f"of {s.collected}: {s.failed} failed, {s.errors} errors, {s.skipped} skipped",
        )
    ]


# ----------------------------------------------------------------------------------------------
# Random weights that behave like trained ones
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, run: Callable[[], object]) -> int:
    """Give every frozen BatchNorm the per-channel mean and variance of its input in ``run()``.

    Layers are calibrated in the order they run, each on the output of the calibrated layers
    before it, so every one normalises to zero mean and unit variance. Returns how many.
    """

    def set_statistics(module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach().float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))]
    handles = [m.register_forward_pre_hook(set_statistics) for m in norms]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return len(norms)


@torch.no_grad()
def spread_class_logits(
    conv: nn.Conv2d, features: list[torch.Tensor], spread: float = 2.0, seed: int = 0
) -> None:
    """Random weights that give ``conv``'s outputs on ``features`` (its inputs, (N, C, H, W) per
    level) a standard deviation of about ``spread`` around the prior bias: at -4.6 (1% prior) and
    spread 2, about a fifth of the (anchor, class) pairs pass a 0.05 score threshold."""
    g = torch.Generator().manual_seed(seed)
    rms = torch.cat([f.float().flatten() for f in features]).square().mean().sqrt().item()
    w = torch.randn(conv.weight.shape, generator=g) * spread / (conv.weight[0].numel() ** 0.5 * rms)
    conv.weight.copy_(w.to(conv.weight))


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def amp_dtype(device: torch.device) -> torch.dtype:
    """What mixed precision means on ``device`` in train_net.py: float16 (with a GradScaler) on
    CUDA, bfloat16 (no scaler needed) elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def make_trainer(
    model: nn.Module, data: Iterable, optimizer: torch.optim.Optimizer, amp: bool, device_type: str
) -> SimpleTrainer:
    """The trainer train_net.py builds (:func:`~dyhead_d2.engine.build_trainer`), with AMP meaning
    float16 + GradScaler on CUDA and bfloat16 autocast elsewhere."""
    if not amp:
        return build_trainer(model, data, optimizer, "float32")
    return build_trainer(
        model, data, optimizer, "cuda_float16" if device_type == "cuda" else "cpu_bfloat16"
    )


def measure_training(
    model: nn.Module,
    inputs: list[dict],
    optimizer: torch.optim.Optimizer,
    amp: bool,
    device: torch.device,
    repeats: int,
    warmup: int,
) -> Measured:
    """Seconds per iteration and peak memory of the trainer's ``run_step`` on one batch, repeated
    (forward, losses, backward, optimizer step, metrics written to an EventStorage)."""
    trainer = make_trainer(model, itertools.repeat(inputs), optimizer, amp, device.type)

    def step() -> None:
        trainer.run_step()
        trainer.iter += 1

    scaler = getattr(trainer, "grad_scaler", None)
    start_scale = scaler.get_scale() if scaler is not None else None
    with EventStorage(0) as storage:
        trainer.storage = storage
        m = measure(step, device, repeats, warmup)
    if scaler is not None:  # a falling scale means steps skipped for inf/NaN gradients
        m.note = f"GradScaler scale {start_scale:g} -> {scaler.get_scale():g}"
    return m


def measure_inference(
    model: nn.Module, inputs: list[dict], amp: bool, device: torch.device, repeats: int, warmup: int
) -> Measured:
    """Time of ``model(inputs)`` in eval mode, under autocast to :func:`amp_dtype` if ``amp``."""
    model.eval()

    def run() -> None:
        ctx = torch.autocast(device.type, dtype=amp_dtype(device)) if amp else nullcontext()
        with torch.no_grad(), ctx:
            model(inputs)

    return measure(run, device, repeats, warmup)


# ----------------------------------------------------------------------------------------------
# Agreement of detections
# ----------------------------------------------------------------------------------------------


def compare_detections(a: Instances, b: Instances, min_iou: float = 0.5) -> tuple[float, int, int]:
    """Pair each detection of ``a`` (by descending score) with an unpaired detection of ``b`` of
    the same class that overlaps it (IoU >= ``min_iou``), the nearest one.

    Returns (largest |coordinate difference| in pixels over the pairs, number of pairs, number of
    detections of either side left unpaired). Pairing, rather than comparing in order, keeps two
    detections whose scores tie to rounding from reading as a difference of a whole box. The
    pairing is :func:`dyhead_d2.deploy.parity.compare_detections`'s, with no tolerance on the
    coordinates and scores (what is measured here is how far they are apart).
    """

    def arrays(x: Instances):
        boxes = x.pred_boxes.tensor.detach().double().cpu().numpy()
        return boxes, x.scores.detach().double().cpu().numpy(), x.pred_classes.cpu().numpy()

    inf = float("inf")
    parity = pair_detections(arrays(a), arrays(b), box_tol=inf, score_tol=inf, min_iou=min_iou)
    return parity.max_box_diff, parity.matched, len(a) + len(b) - 2 * parity.matched


# ----------------------------------------------------------------------------------------------
# Sections of the table that need only a detector builder
# ----------------------------------------------------------------------------------------------

# ``build(deform_impl) -> (model, make_inputs)``: a fresh detector on the CPU with the same weights
# on every call, and ``make_inputs(batch, (h, w))``, Detectron2's list of dicts ("image" (3, h, w),
# "instances" with ground truth), the same on every call.
Builder = Callable[[str], tuple[nn.Module, Callable[[int, tuple[int, int]], list[dict]]]]

MMDET_FPS = "13.2 img/s (MMDetection)"
MMDET_MEMORY = "5.4 GB (MMDetection, 4 img/GPU)"


def trained_like_state(model: nn.Module, inputs: list[dict], seed: int = 0) -> dict:
    """``model``'s weights with calibrated BatchNorms and spread class logits (module docstring);
    ``model`` is a Detectron2 dense detector whose head has ``cls_logits``."""
    images = model.preprocess_image(inputs).tensor
    calibrate_batchnorm(model, lambda: model.backbone(images))
    with torch.no_grad():
        features = model.backbone(images)
    spread_class_logits(
        model.head.cls_logits, [features[f] for f in model.head_in_features], seed=seed
    )
    return model.state_dict()


def _to(inputs: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) for k, v in x.items()} for x in inputs]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def speed_rows(
    build: Builder,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    device: torch.device,
    train_images: int,
    train_size: tuple[int, int],
    infer_size: tuple[int, int],
    repeats: int,
    warmup: int,
) -> list[Row]:
    """Training (s/iteration, peak memory) and batch-1 inference (images/s) of ``build("auto")``,
    in float32 and with AMP; one model at a time on the device, so each peak is its own."""
    rows = []
    for amp in (False, True):
        precision = f"AMP {str(amp_dtype(device)).replace('torch.', '')}" if amp else "float32"
        model, make_inputs = build("auto")
        inputs = _to(make_inputs(train_images, train_size), device)
        model.to(device)
        m = measure_training(model, inputs, make_optimizer(model), amp, device, repeats, warmup)
        where = f"{precision}, {train_images} images {train_size[0]}x{train_size[1]}"
        rows.append(Row("training", where, m.seconds, "s/iter", note=m.note))
        peak = None if m.peak_bytes is None else m.peak_bytes / 2**30
        note = "CUDA only" if peak is None else ""
        rows.append(
            Row("training peak memory", where, peak, "GiB", "" if amp else MMDET_MEMORY, note)
        )
        del model, inputs
        _free(device)

        model, make_inputs = build("auto")  # fresh weights: training may have moved them far
        image = _to(make_inputs(1, infer_size), device)[0]["image"]
        m = measure_inference(model.to(device), [{"image": image}], amp, device, repeats, warmup)
        where = f"{precision}, batch 1 {infer_size[0]}x{infer_size[1]}"
        rows.append(Row("inference", where, 1 / m.seconds, "img/s", "" if amp else MMDET_FPS))
        del model
        _free(device)
    return rows


def detection_rows(build: Builder, device: torch.device, size: tuple[int, int]) -> list[Row]:
    """float32 detections of one image: the CPU with torchvision's deform_conv2d (the authors'
    op) vs ``device`` with deform_impl "auto". On CUDA twice: with cuDNN's TF32 off (true
    float32) and on (PyTorch's default, which Detectron2 keeps)."""
    cpu, make_inputs = build("torchvision")
    image = make_inputs(1, size)[0]["image"]
    with torch.no_grad():
        ref = cpu.eval()([{"image": image}])[0]["instances"]
    model, _ = build("auto")
    model.to(device).eval()
    impl = resolve_deform_impl("auto", device)
    rows, saved = [], torch.backends.cudnn.allow_tf32
    try:
        for tf32 in [False] + ([True] if device.type == "cuda" else []):
            torch.backends.cudnn.allow_tf32 = tf32
            with torch.no_grad():
                out = model([{"image": image.to(device)}])[0]["instances"]
            worst, pairs, unpaired = compare_detections(ref, out)
            tf32_note = f", cuDNN TF32 {'on' if tf32 else 'off'}" if device.type == "cuda" else ""
            where = f"cpu torchvision vs {device.type} {impl}, float32{tf32_note}"
            note = f"{pairs} pairs, {unpaired} unpaired ({len(ref)} vs {len(out)} detections)"
            rows.append(Row("detections cpu vs device", where, worst, "px", "<= 0.01 px", note))
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    return rows
