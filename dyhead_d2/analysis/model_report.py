"""Parameters and FLOPs of a config's model, and the DyHead neck against the head it replaces.

:func:`analyze` builds ``cfg.model`` (random weights: the counts do not depend on them), traces it
with fvcore on one image (:mod:`~dyhead_d2.analysis.flops` counts the deformable convolutions) and
compares DyHead's neck + head with ATSS's original head on the same pyramid: the paper's "no extra
computational overhead" claim, checkable. :func:`format_report` is what ``tools/analyze_model.py``
prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from detectron2.config import instantiate
from fvcore.nn import flop_count_table, parameter_count
from omegaconf import OmegaConf

from ..config import resolve_device
from ..modeling import ATSS
from .flops import atss_original_head, detector_flops, module_flops

__all__ = ["Count", "Report", "analyze", "format_report"]


@dataclass
class Count:
    params: int
    flops: int


@dataclass
class Report:
    """What :func:`analyze` measured (FLOPs as fvcore counts them)."""

    image_size: tuple[int, int]
    padded_size: tuple[int, int] | None
    device: str
    total: Count
    rows: list[tuple[str, Count]]  # modules, depth-first, those with FLOPs
    by_operator: dict[str, int]
    uncounted: dict[str, int]  # operators fvcore has no handle for, and how often they ran
    table: str  # fvcore's flop_count_table
    levels: list[tuple[int, ...]] = field(default_factory=list)  # shapes the head received
    neck: Count | None = None
    neck_blocks: int = 0
    head: Count | None = None
    original_head: Count | None = None
    original_head_channels: int = 0
    note: str = ""


def _module_rows(model, flops_by_module, params_by_module, depth) -> list[tuple[str, Count]]:
    rows = []
    for name, _ in model.named_modules():
        if not name or name.count(".") >= depth:
            continue
        flops = flops_by_module.get(f"model.{name}", 0)
        if flops:
            rows.append((name, Count(params_by_module.get(name, 0), flops)))
    return rows


def analyze(cfg, height: int, width: int, depth: int = 2) -> Report:
    """Build ``cfg.model`` and count its parameters and FLOPs on one ``height x width`` image."""
    dyhead_cfg = OmegaConf.select(cfg, "model.backbone.dyhead")
    if dyhead_cfg is not None:
        dyhead_cfg.deform_impl = "torchvision"  # one deform_conv2d operator per conv, counted
    device = resolve_device(OmegaConf.select(cfg, "train.device", default="auto"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).eval()
    params = parameter_count(model)

    head = getattr(model, "head", None)
    levels: list[tuple[int, ...]] = []
    hook = None
    if isinstance(head, torch.nn.Module):
        # The pyramid the head receives (padded image), recorded while fvcore traces the model.
        def record(module, args):
            if not levels:
                levels.extend(tuple(f.shape) for f in args[0])

        hook = head.register_forward_pre_hook(record)
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        analysis = detector_flops(model, image.to(device))
        by_module = analysis.by_module()
    if hook is not None:
        hook.remove()
    uncounted = {
        op: n for op, n in analysis.unsupported_ops().items() if not op.startswith("prim::")
    }
    report = Report(
        image_size=(height, width),
        padded_size=None,
        device=device,
        total=Count(params[""], analysis.total()),
        rows=_module_rows(model, by_module, params, depth),
        by_operator=dict(analysis.by_operator()),
        uncounted=uncounted,
        table=flop_count_table(analysis, max_depth=depth, show_param_shapes=False),
        levels=levels,
    )
    backbone = getattr(model, "backbone", None)
    divisibility = getattr(backbone, "size_divisibility", 0) or 1
    report.padded_size = tuple(-(-s // divisibility) * divisibility for s in (height, width))

    dyhead = getattr(backbone, "dyhead", None)
    if dyhead is None:
        report.note = "no DyHead neck (model.backbone.dyhead) in this model: nothing to compare"
        return report
    report.neck = Count(params["backbone.dyhead"], by_module["model.backbone.dyhead"])
    report.neck_blocks = len(dyhead.blocks)
    if not isinstance(model, ATSS) or not levels:
        report.note = (
            f"the model is a {type(model).__name__}, not ATSS: no comparison with ATSS's head"
        )
        return report
    num_classes = model.num_classes
    report.head = Count(params["head"], by_module["model.head"])
    channels = levels[0][1]
    original = atss_original_head(channels, num_classes, len(levels)).to(device).eval()
    features = [torch.randn(shape, device=device) for shape in levels]
    with torch.no_grad():
        original_flops = module_flops(original, (features,)).total()
    report.original_head = Count(parameter_count(original)[""], original_flops)
    report.original_head_channels = channels
    return report


def _g(flops: int) -> str:
    return f"{flops / 1e9:10.3f}"


def _m(params: int) -> str:
    return f"{params:,}"


def format_report(report: Report, config_file: str) -> str:
    h, w = report.image_size
    ph, pw = report.padded_size
    lines = [
        f"config: {config_file}",
        f"one {h}x{w} image (padded by the model to {ph}x{pw}), on {report.device}; "
        "FLOPs as fvcore counts them (one multiply-add = 1)",
        "",
        f"{'module':<34}{'params':>12}{'GFLOPs':>12}{'FLOPs %':>10}",
    ]
    for name, count in report.rows:
        indent = "  " * name.count(".")
        share = 100.0 * count.flops / report.total.flops
        lines.append(
            f"{indent + name:<34}{_m(count.params):>12}{_g(count.flops):>12}{share:>9.1f}%"
        )
    lines.append(f"{'total':<34}{_m(report.total.params):>12}{_g(report.total.flops):>12}")
    ops = sorted(report.by_operator.items(), key=lambda kv: -kv[1])
    lines.append("")
    lines.append("GFLOPs by operator: " + ", ".join(f"{op} {f / 1e9:.3f}" for op, f in ops))
    if report.uncounted:
        counted = ", ".join(f"{op} (x{n})" for op, n in sorted(report.uncounted.items()))
        lines.append(f"not counted (no fvcore handle; element-wise, pooling, padding): {counted}")
    if report.neck is not None:
        lines.append("")
        if report.original_head is None:
            lines.append(
                f"DyHead neck, {report.neck_blocks} blocks: {report.neck.params:,} params, "
                f"{report.neck.flops / 1e9:.3f} GFLOPs"
            )
        else:
            lines += _comparison(report)
    if report.note:
        lines.append(report.note)
    return "\n".join(lines)


def _comparison(report: Report) -> list[str]:
    sizes = ", ".join(f"{s[2]}x{s[3]}" for s in report.levels)
    c = report.original_head_channels
    neck, head, orig = report.neck, report.head, report.original_head
    both = Count(neck.params + head.params, neck.flops + head.flops)
    entries = [
        (f"DyHead neck ({report.neck_blocks} blocks)", neck),
        ("this config's head", head),
        ("DyHead neck + this head", both),
        (f"ATSS's original head ({c} ch)", orig),
    ]
    extra = both.flops - orig.flops
    lines = [
        f"DyHead neck vs the head it replaces, on the same {len(report.levels)} levels of "
        f"{c} channels ({sizes}):",
        f"  {'':<38}{'params':>12}{'GFLOPs':>12}",
    ]
    lines += [f"  {name:<38}{_m(x.params):>12}{_g(x.flops):>12}" for name, x in entries]
    lines.append(
        "  (ATSS's original head: two towers of four 3x3 convs with GroupNorm, 3x3 predictors)"
    )
    lines.append(
        f"  DyHead neck + head - original head: {extra / 1e9:+.3f} GFLOPs "
        f"({100.0 * extra / orig.flops:+.1f}% of the original head, "
        f"{100.0 * extra / report.total.flops:+.1f}% of this detector), "
        f"{both.params - orig.params:+,} params"
    )
    return lines
