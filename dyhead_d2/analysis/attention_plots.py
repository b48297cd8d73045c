"""The pictures of :mod:`~dyhead_d2.analysis.attention`, drawn with matplotlib's pyplot (each
figure is saved and closed; ``tools/visualize_attention.py`` selects the Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import pyplot as plt

__all__ = ["BRANCHES", "COEFFICIENTS", "plot_dyrelu", "plot_offsets", "plot_scale"]

BRANCHES = ("low", "mid", "high")
BRANCH_COLORS = {"low": "#4C72B0", "mid": "#DD8452", "high": "#55A868"}
# DyReLU's coefficient ranges (see dyhead_d2.layers.dyrelu), the colour scale of each map.
COEFFICIENTS = (
    ("a1", (0.0, 2.0), "slope of piece 1, in [0, 2]"),
    ("b1", (-0.5, 0.5), "intercept of piece 1, in [-0.5, 0.5]"),
    ("a2", (-1.0, 1.0), "slope of piece 2, in [-1, 1]"),
    ("b2", (-0.5, 0.5), "intercept of piece 2, in [-0.5, 0.5]"),
)


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
