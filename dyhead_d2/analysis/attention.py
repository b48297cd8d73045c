"""What a DyHead attends to on one image: its three attentions recorded and drawn.

:func:`visualize_attention` runs a :class:`~dyhead_d2.inference.Predictor`'s model once while
:class:`~dyhead_d2.layers.recorder.DyHeadRecorder` records each block with forward hooks (the
outputs are unchanged), then writes the pictures of :mod:`~dyhead_d2.analysis.attention_plots`
and the numbers they show (``tools/visualize_attention.py`` describes the files).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..inference import InputError, Predictor, read_image
from ..layers.recorder import DyHeadRecorder
from .attention_plots import BRANCHES, plot_dyrelu, plot_offsets, plot_scale

__all__ = [
    "choose_points",
    "dyrelu_array",
    "record",
    "sampling_locations",
    "scale_array",
    "visualize_attention",
]


def record(predictor: Predictor, image: np.ndarray):
    """Run the model once on ``image`` with the recorder on; returns the recorder, the
    detections, the model input and the backbone's level names and strides."""
    model = predictor.model
    dyhead = getattr(getattr(model, "backbone", None), "dyhead", None)
    if dyhead is None:
        raise ConfigError("the config's model has no DyHead neck (model.backbone.dyhead)")
    inputs = predictor.prepare(image)
    with DyHeadRecorder(dyhead) as recorder, torch.no_grad():
        instances = model([inputs])[0]["instances"].to("cpu")
    shapes = model.backbone.output_shape()
    names = list(model.backbone.in_features)
    return recorder, instances, inputs, names, [shapes[n].stride for n in names]


def scale_array(recorder) -> np.ndarray:
    """(blocks, levels, 3) weights of the low, mid and high branches; NaN where absent."""
    blocks = recorder.blocks
    out = np.full((len(blocks), blocks[0].num_levels, len(BRANCHES)), np.nan, dtype=np.float32)
    for b, rec in enumerate(blocks):
        for level, weights in enumerate(rec.scale):
            for k, name in enumerate(BRANCHES):
                if name in weights:
                    out[b, level, k] = float(weights[name][0])
    return out


def dyrelu_array(recorder) -> np.ndarray:
    """(blocks, levels, 4, channels): a1, b1, a2, b2 of the (only) image."""
    return np.stack(
        [
            np.stack([np.stack([c[0].numpy() for c in level]) for level in rec.dyrelu])
            for rec in recorder.blocks
        ]
    )


def choose_points(centres_xy, stride, valid_hw, count, spacing=3) -> list[tuple[int, int]]:
    """Feature cells (row, col): those of ``centres_xy`` (model-input pixels), then cells of
    ever finer even grids over the valid (unpadded) area; ``count`` in all, at least
    ``spacing`` cells apart where the area allows (so that the kernels do not overlap)."""
    h, w = valid_hw
    points: list[tuple[int, int]] = []

    def add(cell, gap):
        if len(points) < count and all(
            max(abs(cell[0] - r), abs(cell[1] - c)) >= gap for r, c in points
        ):
            points.append(cell)

    for x, y in centres_xy:
        add((min(max(int(y // stride), 0), h - 1), min(max(int(x // stride), 0), w - 1)), spacing)
    side = math.ceil(math.sqrt(count))
    for gap in (spacing, 1):
        for n in range(side, max(h, w) + 1):
            for r in range(n):
                for c in range(n):
                    add((int((r + 0.5) * h / n), int((c + 0.5) * w / n)), gap)
            if len(points) == count:
                return points
    return points


def sampling_locations(offset, mask, points, stride, scale_xy):
    """The mid conv's kernel grid and sampling positions at ``points`` (image x, y), and the
    modulation of each tap: (P, 9, 2), (P, 9, 2), (P, 9)."""
    grid, sampled, modulation = [], [], []
    for i, j in points:
        ki, kj = np.divmod(np.arange(9), 3)
        gy, gx = i - 1 + ki, j - 1 + kj  # padding 1, stride 1, dilation 1
        dy = offset[0, 0::2, i, j].numpy()
        dx = offset[0, 1::2, i, j].numpy()

        def to_image(y, x):
            return np.stack([(x + 0.5) * stride / scale_xy[0], (y + 0.5) * stride / scale_xy[1]], 1)

        grid.append(to_image(gy, gx))
        sampled.append(to_image(gy + dy, gx + dx))
        modulation.append(mask[0, :, i, j].numpy())
    return np.stack(grid), np.stack(sampled), np.stack(modulation)


def visualize_attention(
    cfg,
    image_path: str,
    output: str | Path,
    block: int = -1,
    level: str | None = None,
    num_points: int = 6,
) -> list[Path]:
    """Run ``cfg``'s model (weights ``train.init_checkpoint``) on the image at ``image_path``
    and write the attention pictures and ``attention.npz`` into the folder ``output``; returns
    the paths written. ``block`` (negative: from the end) and ``level`` (e.g. "p4", default the
    finest) choose the offset and DyReLU plots; ``num_points`` the points of the offset plot."""
    block_arg, level_arg = block, level
    if not Path(image_path).is_file():
        raise InputError(f"input image {image_path!r} does not exist")
    predictor = Predictor(cfg)
    image = read_image(image_path, predictor.input_format)
    recorder, instances, inputs, names, strides = record(predictor, image)
    num_blocks = len(recorder.blocks)
    block = block_arg if block_arg >= 0 else num_blocks + block_arg
    if not 0 <= block < num_blocks:
        raise ConfigError(f"--block {block_arg}: the DyHead has blocks 0..{num_blocks - 1}")
    level_name = (level_arg or names[0]).lower()
    if level_name not in names:
        raise ConfigError(f"--level {level_arg}: the levels are {', '.join(names)}")
    level = names.index(level_name)
    stride = strides[level]

    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    rgb = image[:, :, ::-1] if predictor.input_format == "BGR" else image
    height, width = image.shape[:2]
    resized_h, resized_w = inputs["image"].shape[-2:]
    scale_xy = (resized_w / width, resized_h / height)

    # Points: detection centres (model-input pixels), then a grid over the image's cells.
    boxes = instances.pred_boxes.tensor.numpy()
    centres = [
        ((x0 + x1) / 2 * scale_xy[0], (y0 + y1) / 2 * scale_xy[1]) for x0, y0, x1, y1 in boxes
    ]
    valid = (math.ceil(resized_h / stride), math.ceil(resized_w / stride))
    points = choose_points(centres, stride, valid, num_points)
    rec = recorder.blocks[block]
    grid, sampled, modulation = sampling_locations(
        rec.offset[level], rec.mask[level], points, stride, scale_xy
    )

    scale = scale_array(recorder)
    dyrelu = dyrelu_array(recorder)
    written = [
        out / "scale_attention.png",
        out / f"offsets_block{block}_{level_name}.png",
        out / f"dyrelu_block{block}.png",
        out / "attention.npz",
    ]
    plot_scale(scale, names, written[0])
    plot_offsets(
        rgb,
        points,
        grid,
        sampled,
        modulation,
        f"Spatial-aware attention, block {block}, level {level_name.upper()} (stride {stride}): "
        f"the mid deformable conv's 9 samples at {len(points)} points",
        written[1],
    )
    plot_dyrelu(dyrelu[block], names, block, written[2])
    np.savez(
        written[3],
        scale=scale,
        dyrelu=dyrelu,
        levels=np.array(names),
        block=block,
        level=level,
        stride=stride,
        points=np.array(points),
        grid=grid,
        sampling=sampled,
        modulation=modulation,
    )
    return written
