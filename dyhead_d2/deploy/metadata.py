"""What an exported file says about itself: output names, metadata keys and the test resizing.

Shared by the exporter (torch, detectron2) and :class:`~dyhead_d2.deploy.OnnxPredictor`
(numpy only), so it imports neither torch nor detectron2.
"""

from __future__ import annotations

__all__ = ["MASK_OUTPUT", "METADATA_KEYS", "OUTPUT_NAMES", "resize_spec", "resized_shape"]

OUTPUT_NAMES = ("boxes", "scores", "classes")
# A mask model's fourth output: (N, M, M) mask probabilities of each detection on its box.
MASK_OUTPUT = "masks"

# Keys of the ONNX file's metadata_props.
METADATA_KEYS = {
    "input_format": "dyhead_d2.input_format",  # "BGR" or "RGB"
    "resize": "dyhead_d2.resize",  # JSON, see resize_spec
    "class_names": "dyhead_d2.class_names",  # JSON list, index = class id
    "max_detections": "dyhead_d2.max_detections_per_image",
    "config_file": "dyhead_d2.config_file",
    "weights": "dyhead_d2.weights",
    "meta_architecture": "dyhead_d2.meta_architecture",
    "deform_op": "dyhead_d2.deform_op",  # how the deformable convolutions are exported
}


def _fixed(values, what: str) -> int:
    values = [int(v) for v in values]
    if len(set(values)) != 1:
        raise ValueError(
            f"the test loader's {what} picks a random size among {values}; an exported model "
            "needs one test size (set dataloader.test.mapper.augmentations)"
        )
    return values[0]


def resize_spec(augmentations: list) -> dict:
    """The test augmentations (Detectron2 ``Augmentation`` objects) as a JSON-able dict.

    Supported: none (``{"type": "none"}``), one ``ResizeShortestEdge`` with one size
    (``{"type": "shortest_edge", "short_edge": S, "max_size": M, "interp": I}``) or one ``Resize``
    (``{"type": "fixed", "height": H, "width": W, "interp": I}``); ``interp`` is a Pillow
    resampling filter. Anything else raises a ValueError naming it.
    """
    if not augmentations:
        return {"type": "none"}
    if len(augmentations) > 1:
        names = [type(a).__name__ for a in augmentations]
        raise ValueError(f"the test loader has several augmentations {names}; export needs <= 1")
    (aug,) = augmentations
    kind = type(aug).__name__
    if kind == "ResizeShortestEdge":
        # (min, max) of a range or the choices: one size only when they are all equal.
        short = _fixed(aug.short_edge_length, kind)
        return {
            "type": "shortest_edge",
            "short_edge": short,
            "max_size": int(aug.max_size),
            "interp": int(aug.interp),
        }
    if kind == "Resize":
        h, w = (int(s) for s in aug.shape)
        return {"type": "fixed", "height": h, "width": w, "interp": int(aug.interp)}
    raise ValueError(
        f"the test loader's augmentation {kind} has no exportable description; "
        "supported: ResizeShortestEdge (one size), Resize, or none"
    )


def resized_shape(height: int, width: int, spec: dict) -> tuple[int, int]:
    """The (height, width) the test loader resizes an image of ``height`` x ``width`` to;
    Detectron2's ``ResizeShortestEdge.get_output_shape`` for ``"shortest_edge"``."""
    kind = spec["type"]
    if kind == "none":
        return height, width
    if kind == "fixed":
        return spec["height"], spec["width"]
    if kind != "shortest_edge":
        raise ValueError(f"unknown resize type {kind!r} in the model's metadata")
    if spec["short_edge"] == 0:
        return height, width
    size = spec["short_edge"] * 1.0
    scale = size / min(height, width)
    if height < width:
        new_h, new_w = size, scale * width
    else:
        new_h, new_w = scale * height, size
    if max(new_h, new_w) > spec["max_size"]:
        scale = spec["max_size"] * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)
