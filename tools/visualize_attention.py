#!/usr/bin/env python
"""Pictures of what a trained DyHead attends to, for one image.

    python tools/visualize_attention.py --config-file configs/quickstart/atss_dyhead_synthetic.py \\
        --input IMG --output attention_out train.init_checkpoint=output/quickstart/model_final.pth

The config's model, with the weights of ``train.init_checkpoint``, runs once on the image (read
and resized as the config's test loader does) while
:class:`dyhead_d2.layers.recorder.DyHeadRecorder` records each DyHead block with forward hooks
(the outputs are unchanged). Written to ``--output``:

* ``scale_attention.png``: the scale-aware attention, for every block and level the weight of
  each branch it fuses (low: from the finer level, mid: its own, high: from the coarser level),
  ``hard_sigmoid(relu(.))``, so in [0.5, 1];
* ``offsets_block{B}_{LEVEL}.png``: the spatial-aware attention of block ``--block`` on level
  ``--level``: at ``--num-points`` positions (the centres of the highest-scoring detections,
  then a grid) the 3x3 kernel grid of the ``mid`` deformable convolution and where it actually
  samples (grid + learned offset), coloured by the modulation scalar, over the whole image and
  zoomed in. Feature position (y, x) at stride s is drawn at image position ((y + 0.5) s,
  (x + 0.5) s), the centre of its cell, scaled back to the original image;
* ``dyrelu_block{B}.png``: the task-aware attention of block ``--block``: DyReLU's
  ``a1, b1, a2, b2`` (``out = max(a1 x + b1, a2 x + b2)``) per level and channel;
* ``attention.npz``: the numbers drawn (``scale`` (blocks, levels, 3: low, mid, high; NaN where
  a level has no such branch), ``dyrelu`` (blocks, levels, 4, channels), and for the points
  ``points`` (feature row, column), ``grid``, ``sampling`` (image x, y per tap), ``modulation``).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
# Raised inside fvcore and detectron2 on this torch version, not by this project.
warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
warnings.filterwarnings("ignore", "torch.meshgrid: in an upcoming release", UserWarning)

from dyhead_d2._detectron2 import require_detectron2  # noqa: E402

require_detectron2("tools/visualize_attention.py")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from dyhead_d2.engine import ConfigError, load_config  # noqa: E402
from dyhead_d2.engine.predictor import InputError, Predictor, read_image  # noqa: E402
from dyhead_d2.layers.recorder import DyHeadRecorder  # noqa: E402

PROG = "visualize_attention.py"
BRANCHES = ("low", "mid", "high")
BRANCH_COLORS = {"low": "#4C72B0", "mid": "#DD8452", "high": "#55A868"}
# DyReLU's coefficient ranges (see dyhead_d2.layers.dyrelu), the colour scale of each map.
COEFFICIENTS = (
    ("a1", (0.0, 2.0), "slope of piece 1, in [0, 2]"),
    ("b1", (-0.5, 0.5), "intercept of piece 1, in [-0.5, 0.5]"),
    ("a2", (-1.0, 1.0), "slope of piece 2, in [-1, 1]"),
    ("b2", (-0.5, 0.5), "intercept of piece 2, in [-0.5, 0.5]"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", required=True, metavar="IMG", help="one image file")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument(
        "--block", type=int, default=-1, help="block of the offset and DyReLU plots (default last)"
    )
    parser.add_argument(
        "--level", default=None, help="level of the offset plot, e.g. p4 (default the finest)"
    )
    parser.add_argument("--num-points", type=int, default=6, help="points to show (default 6)")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="key=value overrides of the config, last"
    )
    args = parser.parse_args(argv)
    if args.num_points < 1:
        parser.error("--num-points must be >= 1")
    return args


# ----------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def plot_scale(scale: np.ndarray, level_names: list[str], path: Path) -> None:
    num_blocks, num_levels, _ = scale.shape
    cols = min(num_blocks, 3)
    rows = math.ceil(num_blocks / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.8), squeeze=False, sharey=True
    )
    x = np.arange(num_levels)
    width = 0.27
    for b in range(rows * cols):
        ax = axes.flat[b]
        if b >= num_blocks:
            ax.axis("off")
            continue
        for k, name in enumerate(BRANCHES):
            values = scale[b, :, k]
            bars = ax.bar(
                x + (k - 1) * width,
                np.nan_to_num(values, nan=0.0),
                width,
                color=BRANCH_COLORS[name],
                label=name,
            )
            for bar, v in zip(bars, values):
                if not np.isnan(v):
                    ax.annotate(
                        f"{v:.2f}",
                        (bar.get_x() + bar.get_width() / 2, v),
                        ha="center",
                        va="bottom",
                        fontsize=6.5,
                        rotation=90,
                        xytext=(0, 1),
                        textcoords="offset points",
                    )
        ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
        ax.set_ylim(0.45, 1.08)
        ax.set_xticks(x, [n.upper() for n in level_names])
        ax.set_title(f"block {b}")
        ax.set_xlabel("level")
        if b % cols == 0:
            ax.set_ylabel("attention weight")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        [f"{name} branch" for name in labels],
        loc="lower center",
        ncol=3,
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(
        "Scale-aware attention: weight of each branch a level fuses\n"
        "(low: finer level, mid: same level, high: coarser level; 0.5 = floor)",
        fontsize=11,
        x=0.02,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0.06 if rows == 1 else 0.03, 1, 0.9 if rows == 1 else 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_offsets(rgb, points, grid, sampled, modulation, title, path: Path) -> None:
    n = len(points)
    fig = plt.figure(figsize=(max(8.0, 2.0 * n), 10.0))
    main_ax = fig.add_axes((0.05, 0.36, 0.8, 0.56))
    cbar_ax = fig.add_axes((0.86, 0.40, 0.02, 0.48))
    h, w = rgb.shape[:2]
    cmap = plt.get_cmap("viridis")

    def draw(ax, shown, size):
        ax.imshow(rgb, extent=(0, w, h, 0), interpolation="nearest")
        for p in shown:
            for k in range(9):
                ax.plot(*zip(grid[p, k], sampled[p, k]), color="white", lw=0.7, alpha=0.8)
            ax.scatter(
                grid[p, :, 0],
                grid[p, :, 1],
                s=size,
                facecolors="none",
                edgecolors="white",
                marker="s",
                linewidths=0.8,
            )
            ax.scatter(
                sampled[p, :, 0],
                sampled[p, :, 1],
                s=size,
                c=modulation[p],
                cmap=cmap,
                vmin=0,
                vmax=1,
                edgecolors="black",
                linewidths=0.4,
                zorder=3,
            )
            ax.scatter(*grid[p, 4], s=size * 1.6, marker="+", color="red", zorder=4)

    draw(main_ax, range(n), 14)
    main_ax.set_xlim(0, w)
    main_ax.set_ylim(h, 0)
    main_ax.set_xlabel("x (pixels)")
    main_ax.set_ylabel("y (pixels)")
    main_ax.set_title(title, fontsize=10)
    for p in range(n):
        main_ax.annotate(
            str(p),
            grid[p, 4],
            xytext=(4, 4),
            textcoords="offset points",
            color="yellow",
            fontsize=9,
            weight="bold",
        )
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, cax=cbar_ax, label="modulation (mask) of the sample")

    zoom_w = 0.9 / n
    for p in range(n):
        ax = fig.add_axes((0.05 + p * zoom_w, 0.04, zoom_w * 0.92, 0.22))
        draw(ax, [p], 36)
        pts = np.concatenate([grid[p], sampled[p]])
        centre = grid[p, 4]
        half = max(np.abs(pts - centre).max() * 1.25, 4.0)
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] + half, centre[1] - half)
        ax.set_title(f"point {p}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.text(
        0.05,
        0.29,
        "zoomed: white squares = 3x3 kernel grid, dots = where it samples "
        "(grid + offset), red + = output position",
        fontsize=9,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dyrelu(coefficients: np.ndarray, level_names: list[str], block: int, path: Path):
    num_levels, _, channels = coefficients.shape
    fig, axes = plt.subplots(4, 1, figsize=(11, 1.0 + 0.45 * num_levels * 4 + 1.2), squeeze=False)
    for k, (name, (lo, hi), meaning) in enumerate(COEFFICIENTS):
        ax = axes[k, 0]
        im = ax.imshow(
            coefficients[:, k, :],
            aspect="auto",
            cmap="coolwarm",
            vmin=lo,
            vmax=hi,
            interpolation="nearest",
        )
        ax.set_yticks(range(num_levels), [n.upper() for n in level_names])
        ax.set_ylabel("level")
        ax.set_title(f"{name}: {meaning}", fontsize=10, loc="left")
        fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04)
        if k == 3:
            ax.set_xlabel("channel")
    fig.suptitle(
        f"Task-aware attention (DyReLU) of block {block}: "
        "out = max(a1 x + b1, a2 x + b2) per channel",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[Path]:
    cfg = load_config(args.config_file, args.opts)
    if not Path(args.input).is_file():
        raise InputError(f"input image {args.input!r} does not exist")
    predictor = Predictor(cfg)
    image = read_image(args.input, predictor.input_format)
    recorder, instances, inputs, names, strides = record(predictor, image)
    num_blocks = len(recorder.blocks)
    block = args.block if args.block >= 0 else num_blocks + args.block
    if not 0 <= block < num_blocks:
        raise ConfigError(f"--block {args.block}: the DyHead has blocks 0..{num_blocks - 1}")
    level_name = (args.level or names[0]).lower()
    if level_name not in names:
        raise ConfigError(f"--level {args.level}: the levels are {', '.join(names)}")
    level = names.index(level_name)
    stride = strides[level]

    out = Path(args.output)
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
    points = choose_points(centres, stride, valid, args.num_points)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        written = run(args)
    except (ConfigError, InputError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
