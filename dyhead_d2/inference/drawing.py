"""Pictures of detections: boxes, masks, class names and scores drawn on the image.

Drawn with Detectron2's ``Visualizer`` where it can be imported. It imports OpenCV (``cv2``) at
module level, which Detectron2 does not install (it needs it only for masks); without OpenCV the
same picture (boxes, labels in the top-left corner on a dark background, one colour per class)
is drawn here with matplotlib, so the tools work either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from detectron2.structures import Instances
from detectron2.utils.colormap import colormap
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["class_name", "detection_labels", "draw_detections", "visualizer_available"]


def visualizer_available() -> bool:
    """Whether Detectron2's ``Visualizer`` (which needs OpenCV) can be imported."""
    try:
        from detectron2.utils.visualizer import Visualizer  # noqa: F401
    except ImportError:
        return False
    return True


def class_name(class_names: Sequence[str] | None, index: int) -> str:
    """The name of contiguous class ``index``, or the index itself where there is no name."""
    return class_names[index] if class_names and index < len(class_names) else str(index)


def detection_labels(instances: Instances, class_names: Sequence[str] | None) -> list[str]:
    """ "name 87%" for each detection (the class index where there are no names)."""
    return [
        f"{class_name(class_names, c)} {s:.0%}"
        for c, s in zip(instances.pred_classes.tolist(), instances.scores.tolist())
    ]


def _class_colors(classes: Sequence[int]) -> list[np.ndarray]:
    palette = colormap(rgb=True, maximum=1)
    return [palette[c % len(palette)] for c in classes]


def draw_detections(
    image_rgb: np.ndarray,
    instances: Instances,
    metadata=None,
    scale: float = 1.0,
    use_visualizer: bool | None = None,
) -> np.ndarray:
    """Draw ``instances`` (boxes in ``image_rgb``'s pixels) on an (H, W, 3) uint8 RGB image.

    Each box gets its class colour and a "name score%" label, names from ``metadata``'s
    ``thing_classes``; a mask model's ``pred_masks`` (N, H, W) are drawn too, filled in the
    same colour. Returns an RGB uint8 image of ``scale`` times the size (exactly H x W for
    ``scale=1``). ``use_visualizer``: None picks Detectron2's ``Visualizer`` when it can be
    imported; False draws with matplotlib here.
    """
    instances = instances.to("cpu")
    class_names = metadata.get("thing_classes", None) if metadata is not None else None
    labels = detection_labels(instances, class_names)
    colors = _class_colors(instances.pred_classes.tolist())
    boxes = instances.pred_boxes.tensor.numpy()
    masks = instances.pred_masks.numpy().astype(bool) if instances.has("pred_masks") else None
    if use_visualizer is None:
        use_visualizer = visualizer_available()
    if use_visualizer:
        from detectron2.utils.visualizer import Visualizer

        vis = Visualizer(image_rgb, metadata, scale=scale)
        out = vis.overlay_instances(boxes=boxes, labels=labels, masks=masks, assigned_colors=colors)
        return out.get_image()
    if masks is not None:
        image_rgb = _fill_masks(image_rgb, masks, colors)
    return _draw(image_rgb, boxes, labels, colors, scale)


def _fill_masks(image_rgb, masks, colors, alpha: float = 0.5) -> np.ndarray:
    """Each mask's pixels blended with its colour, lowest score first (drawn over by better
    detections), as Visualizer fills them."""
    out = image_rgb.astype(np.float32)
    for mask, color in reversed(list(zip(masks, colors))):
        out[mask] = (1 - alpha) * out[mask] + alpha * 255.0 * np.asarray(color[:3])
    return out.round().clip(0, 255).astype(np.uint8)


def _draw(image_rgb, boxes, labels, colors, scale: float) -> np.ndarray:
    h, w = image_rgb.shape[:2]
    out_h, out_w = max(int(round(h * scale)), 1), max(int(round(w * scale)), 1)
    dpi = 100
    fig = Figure(figsize=((out_w + 1e-2) / dpi, (out_h + 1e-2) / dpi), dpi=dpi, frameon=False)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes([0.0, 0.0, 1.0, 1.0])
    ax.axis("off")
    ax.imshow(image_rgb, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    # Sizes in points, growing with the picture like Visualizer's, at least legible.
    font = max(math.sqrt(out_h * out_w) / 90.0, 9.0)
    line = max(font / 4.0, 1.0)
    for (x0, y0, x1, y1), label, color in zip(boxes, labels, colors):
        ax.add_patch(
            Rectangle(
                (x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=line, alpha=0.9
            )
        )
        # Text on a dark background must not be dark itself.
        text_color = np.maximum(np.asarray(matplotlib.colors.to_rgb(color)), 0.25)
        text_color[np.argmax(text_color)] = max(0.85, text_color.max())
        ax.text(
            x0,
            y0,
            label,
            size=font * 0.8,
            family="sans-serif",
            color=text_color,
            verticalalignment="top",
            horizontalalignment="left",
            bbox={"facecolor": "black", "alpha": 0.75, "pad": 0.6, "edgecolor": "none"},
            clip_on=True,
            zorder=10,
        )
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:out_h, :out_w, :3])
