"""Exporting a LazyConfig detector to ONNX that stock onnxruntime runs (needs detectron2).

The exported graph is the model's own eval forward on one image, ``model([{"image": image}])``,
traced by PyTorch's TorchScript-based ONNX exporter with the image height and width dynamic: the
backbone, DyHead, the head, the candidate selection, NMS and Detectron2's ``detector_postprocess``
(clip to the image, drop empty boxes). Nothing is re-implemented for export; a few ops carry their
own ONNX translation (a ``symbolic``). DyHead's deformable convolutions become, by ``deform_op``:

* ``"DeformConv"`` (default, opset >= 19): ONNX's own ``DeformConv`` op, one per level and
  branch. The model is traced with ``deform_impl="torchvision"`` (whatever the config says; the
  implementations compute the same function) and torchvision's op is translated to
  ``DeformConv``, whose arguments and sampling are torchvision's. onnxruntime runs it with a
  native kernel from version 1.25 on; it is the faster file (``tools/benchmark.py --which f``).
* ``"gather"`` (opset >= 17): the ``"sampled"`` implementation's gathers and matrix products
  (its gather-sum has its own translation, ONNX having no ``embedding_bag``), for runtimes
  without ``DeformConv``; the model must use ``deform_impl="sampled"`` or ``"auto"``.

ATSS's class-aware NMS has its own translation too (:mod:`dyhead_d2.modeling.nms`). A mask
model (Mask R-CNN) has a fourth output, each detection's mask probabilities on its box (the mask
head's (M, M) grid of the predicted class), which :class:`~dyhead_d2.deploy.OnnxPredictor`
pastes into the image as ``detector_postprocess`` does; pasting in the graph would make an
output of N x H x W. Splitting a tensor into per-image pieces, which Detectron2's heads do, is
one piece for the one image traced: its translation is the whole tensor, not a split at the
traced size. The test loader's resizing and the class names go into the file's metadata
(:data:`METADATA_KEYS`), so :class:`~dyhead_d2.deploy.OnnxPredictor` runs it without the config.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.onnx import symbolic_helper, symbolic_opset13

from ..inference.predictor import Predictor
from ..layers.deform_conv import resolve_deform_impl
from .metadata import MASK_OUTPUT, METADATA_KEYS, OUTPUT_NAMES, resize_spec
from .parity import Parity, compare_detections

__all__ = [
    "DEFORM_OPS",
    "ExportError",
    "ExportedDetector",
    "OnnxExport",
    "check_exportable",
    "deform_conv_export",
    "describe_onnx",
    "export_onnx",
]

# The lowest opset the issue asks for; every op of the "gather" graph exists there.
MIN_OPSET = 17
# How the deformable convolutions are exported (see the module docstring), with their lowest
# opset: ONNX's DeformConv appeared in opset 19.
DEFORM_OPS = {"DeformConv": 19, "gather": MIN_OPSET}


class ExportError(ValueError):
    """A model or config that cannot be exported as asked; the message says what to change."""


def predicts_masks(model: nn.Module) -> bool:
    """Whether ``model`` is a mask model (Detectron2's ROI heads with their mask branch on)."""
    return bool(getattr(getattr(model, "roi_heads", None), "mask_on", False))


class ExportedDetector(nn.Module):
    """``model`` on one (3, H, W) float32 image (0-255, already resized) -> ``boxes`` (N, 4)
    XYXY in that image's pixels, ``scores`` (N,) and ``classes`` (N,) int64: the model's own
    eval forward, ``model([{"image": image}])``, with its ``Instances`` unpacked into tensors.

    A mask model also returns ``masks`` (N, M, M), each detection's mask probabilities on its
    box: its forward without ``detector_postprocess``, which is then applied to all but the
    masks (the boxes clipped to the image, empty ones dropped, as in the model's forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.masks = predicts_masks(model)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        if not self.masks:
            instances = self.model([{"image": image}])[0]["instances"]
            return instances.pred_boxes.tensor, instances.scores, instances.pred_classes
        (raw,) = self.model.inference([{"image": image}], do_postprocess=False)
        probabilities = raw.pred_masks[:, 0]  # (N, 1, M, M) for the predicted classes
        raw.remove("pred_masks")
        raw.detection_index = torch.arange(raw.scores.shape[0])  # traced: a dynamic count
        instances = detector_postprocess(raw, *raw.image_size)
        return (
            instances.pred_boxes.tensor,
            instances.scores,
            instances.pred_classes,
            probabilities[instances.detection_index],
        )


def check_exportable(model: nn.Module, deform_op: str) -> None:
    """Raise :class:`ExportError` for a model whose CPU forward cannot be exported as
    ``deform_op`` (one of :data:`DEFORM_OPS`).

    ``"DeformConv"`` exports any ``deform_impl``. ``"gather"`` needs the ``"sampled"``
    implementation (``"auto"`` is that on the CPU, where the export traces):
    ``torchvision.ops.deform_conv2d`` has no gather translation.
    """
    if deform_op not in DEFORM_OPS:
        raise ExportError(f"unknown deform_op {deform_op!r}; expected one of {list(DEFORM_OPS)}")
    if deform_op != "gather":
        return
    for name, module in model.named_modules():
        impl = getattr(module, "deform_impl", None)
        if isinstance(impl, str) and resolve_deform_impl(impl, torch.device("cpu")) != "sampled":
            where = name or type(module).__name__
            raise ExportError(
                f"{where} has deform_impl={impl!r}, which the 'gather' export cannot translate "
                "(torchvision's deform_conv2d is one compiled op). Set "
                "model.backbone.dyhead.deform_impl=sampled (or auto, which is 'sampled' on the "
                "CPU): it computes the same function from standard ops; or export with "
                "deform_op 'DeformConv' (opset 19)."
            )


@symbolic_helper.parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
def _deform_conv2d_symbolic(
    g,
    input,
    weight,
    offset,
    mask,
    bias,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dilation_h,
    dilation_w,
    groups,
    offset_groups,
    use_mask,
):
    # torchvision::deform_conv2d -> DeformConv: the same inputs (X, W, offset, B, mask), offsets
    # as (dy, dx) pairs per tap, bilinear sampling with zeros outside. Without a mask torchvision
    # is unmodulated, which is DeformConv without its mask input.
    inputs = [input, weight, offset, bias] + ([mask] if use_mask else [])
    attrs = {}
    sizes = symbolic_helper._get_tensor_sizes(weight)
    if sizes is not None and None not in sizes[-2:]:
        attrs["kernel_shape_i"] = list(sizes[-2:])
    return g.op(
        "DeformConv",
        *inputs,
        strides_i=[stride_h, stride_w],
        pads_i=[pad_h, pad_w, pad_h, pad_w],
        dilations_i=[dilation_h, dilation_w],
        group_i=groups,
        offset_group_i=offset_groups,
        **attrs,
    )


@contextlib.contextmanager
def deform_conv_export(model: nn.Module, deform_op: str = "DeformConv") -> Iterator[None]:
    """Within it, ``torch.onnx.export(model, ..., dynamo=False)`` writes the deformable
    convolutions as ``deform_op`` (see the module docstring): for ``"DeformConv"``, every
    ``deform_impl`` of ``model`` is ``"torchvision"`` and torchvision's op has an ONNX
    translation (both undone on exit). ``"gather"`` only checks the model
    (:func:`check_exportable`)."""
    check_exportable(model, deform_op)
    if deform_op == "gather":
        yield
        return
    impls = {
        module: module.deform_impl
        for module in model.modules()
        if isinstance(getattr(module, "deform_impl", None), str)
    }
    name, opset = "torchvision::deform_conv2d", DEFORM_OPS["DeformConv"]
    try:
        for module in impls:
            module.deform_impl = "torchvision"
        torch.onnx.register_custom_op_symbolic(name, _deform_conv2d_symbolic, opset)
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic(name, opset)
        for module, impl in impls.items():
            module.deform_impl = impl


def _split_with_sizes_symbolic(g, self, split_sizes, dim, _outputs=None):
    # Detectron2 splits batched results into per-image pieces, e.g. mask_rcnn_inference's
    # masks.split([len(instances)]). Traced on one image that is one piece, of the traced
    # detection count: the default translation would bake that count into the graph.
    sizes = symbolic_helper._maybe_get_const(split_sizes, "is")
    if _outputs == 1 or (isinstance(sizes, list) and len(sizes) == 1):
        return g.op("Identity", self)
    return symbolic_opset13.split_with_sizes(g, self, split_sizes, dim, _outputs)


@contextlib.contextmanager
def single_piece_split_export(opset: int) -> Iterator[None]:
    """Within it, ``torch.onnx.export`` writes a split into one piece as the whole tensor."""
    name = "aten::split_with_sizes"
    torch.onnx.register_custom_op_symbolic(name, _split_with_sizes_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic(name, opset)


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and how the file compared with PyTorch on the sample."""

    path: str
    metadata: dict[str, str]
    sample_size: tuple[int, int]
    parity: Parity | None  # onnxruntime vs PyTorch on the sample image (None: not run)
    # A mask model's largest mask probability difference over the matched detections (None:
    # not a mask model, or not run).
    max_mask_diff: float | None = None


def _metadata(predictor: Predictor, config_file: str | None) -> dict[str, str]:
    names = predictor.metadata.get("thing_classes", None)
    model = predictor.model
    try:
        spec = resize_spec(list(predictor.augmentations.augs))
    except ValueError as e:
        raise ExportError(str(e)) from e
    return {
        METADATA_KEYS["input_format"]: predictor.input_format,
        METADATA_KEYS["resize"]: json.dumps(spec),
        METADATA_KEYS["class_names"]: json.dumps(list(names) if names else []),
        METADATA_KEYS["max_detections"]: str(_max_detections(model)),
        METADATA_KEYS["config_file"]: str(config_file or ""),
        METADATA_KEYS["weights"]: str(predictor.weights),
        METADATA_KEYS["meta_architecture"]: type(model).__name__,
    }


def _max_detections(model: nn.Module) -> int:
    for attr in ("max_detections_per_image", "test_detections_per_img"):
        if hasattr(model, attr):
            return int(getattr(model, attr))
    heads = getattr(model, "roi_heads", None)
    box_predictor = getattr(heads, "box_predictor", None)
    return int(getattr(box_predictor, "test_topk_per_image", 0))


def _nms_thresh(model: nn.Module) -> float | None:
    if hasattr(model, "test_nms_thresh"):
        return float(model.test_nms_thresh)
    box_predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    return getattr(box_predictor, "test_nms_thresh", None)


def sample_image(size: tuple[int, int], seed: int = 0) -> Tensor:
    """A (3, H, W) float32 image of random 0-255 integers, the tracing and check input."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, *size), generator=g).float()


def _validate(path: str) -> None:
    import onnx

    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path, load_external_data=False)
    custom = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(f"{path}: the graph uses non-standard op domains {custom}")


# Mask probabilities of a matched detection may differ by float rounding only.
MASK_TOLERANCE = 1e-3


def _output_names(wrapper: ExportedDetector) -> list[str]:
    return [*OUTPUT_NAMES, MASK_OUTPUT] if wrapper.masks else list(OUTPUT_NAMES)


def _compare_with_onnxruntime(
    path: str, wrapper: ExportedDetector, image: Tensor, max_detections: int
) -> tuple[Parity, float | None]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = session.run(_output_names(wrapper), {"image": image.numpy()})
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(image)]
    parity = compare_detections(
        expected[:3],
        outputs[:3],
        max_detections=max_detections,
        nms_thresh=_nms_thresh(wrapper.model),
    )
    if not parity.ok:
        raise ExportError(
            f"{path}: onnxruntime and PyTorch disagree on a sample image ({parity}); "
            "the export is not faithful"
        )
    mask_diff = None
    if wrapper.masks:
        mask_diff = max(
            (float(abs(expected[3][i] - outputs[3][j]).max()) for i, j in parity.pairs),
            default=0.0,
        )
        if mask_diff > MASK_TOLERANCE:
            raise ExportError(
                f"{path}: onnxruntime and PyTorch masks differ by up to {mask_diff:.2e} in "
                "probability on a sample image; the export is not faithful"
            )
    return parity, mask_diff


def export_onnx(
    cfg: DictConfig,
    output: str | os.PathLike,
    *,
    weights: str | None = None,
    config_file: str | None = None,
    deform_op: str = "DeformConv",
    opset: int | None = None,
    sample_size: tuple[int, int] = (320, 448),
    verify: bool = True,
) -> OnnxExport:
    """Write ``cfg.model`` with ``weights`` (default ``cfg.train.init_checkpoint``) as ONNX.

    The file has one input ``image`` (3, H, W) float32 with dynamic H and W and the outputs
    :data:`OUTPUT_NAMES` (and :data:`MASK_OUTPUT` for a mask model); see the module docstring
    for ``deform_op``. ``opset`` defaults to the
    lowest one ``deform_op`` allows (:data:`DEFORM_OPS`). The graph is traced on
    ``sample_size``, checked with ``onnx.checker`` (and for standard op domains only) and, with
    ``verify``, run by onnxruntime's CPU provider on that sample, whose detections must match
    the PyTorch model's (as configured) in number (the differences are returned).
    """
    if deform_op not in DEFORM_OPS:
        raise ExportError(f"unknown deform_op {deform_op!r}; expected one of {list(DEFORM_OPS)}")
    lowest = DEFORM_OPS[deform_op]
    opset = lowest if opset is None else opset
    if opset < lowest:
        hint = " (or deform_op 'gather', opset >= 17)" if deform_op == "DeformConv" else ""
        raise ExportError(
            f"opset {opset} is too old; deform_op {deform_op!r} needs opset >= {lowest}{hint}"
        )
    predictor = Predictor(cfg, weights=weights, device="cpu")
    model = predictor.model
    check_exportable(model, deform_op)
    metadata = _metadata(predictor, config_file)
    metadata[METADATA_KEYS["deform_op"]] = deform_op
    wrapper = ExportedDetector(model).eval()
    output_names = _output_names(wrapper)
    image = sample_image(sample_size)
    path = os.fspath(output)
    with (
        torch.no_grad(),
        deform_conv_export(model, deform_op),
        single_piece_split_export(opset),
        warnings.catch_warnings(),
    ):
        # The tracer warns about every Python value it records; the checks below are what say
        # whether the graph generalises (and the tests run it on other sizes).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX")
        torch.onnx.export(
            wrapper,
            (image,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=output_names,
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                **{name: {0: "detections"} for name in output_names},
            },
        )
    # The mask grid's size is fixed, but ONNX's shape inference does not see through the
    # gather of the predicted class: state it.
    fixed = {}
    if wrapper.masks:
        with torch.no_grad():
            size = wrapper(image)[3].shape
        fixed[MASK_OUTPUT] = {1: size[1], 2: size[2]}
    _write_metadata(path, metadata, fixed)
    _validate(path)
    parity = mask_diff = None
    if verify:
        max_det = int(metadata[METADATA_KEYS["max_detections"]])
        parity, mask_diff = _compare_with_onnxruntime(path, wrapper, image, max_det)
    return OnnxExport(path, metadata, sample_size, parity, mask_diff)


def _write_metadata(
    path: str, metadata: dict[str, str], fixed_dims: dict[str, dict[int, int]] | None = None
) -> None:
    """Store ``metadata`` in the file, and give outputs the sizes ``fixed_dims`` states
    (``{output: {axis: size}}``)."""
    import onnx

    model = onnx.load(path)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    for output in model.graph.output:
        for axis, size in (fixed_dims or {}).get(output.name, {}).items():
            output.type.tensor_type.shape.dim[axis].dim_value = int(size)
    onnx.save(model, path)


def describe_onnx(path: str | os.PathLike) -> str:
    """The inputs and outputs of an ONNX file, one line each: name, element type, shape."""
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)

    def line(value) -> str:
        t = value.type.tensor_type
        dims = [
            d.dim_param or str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?"
            for d in t.shape.dim
        ]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return f"  {value.name}: {dtype} ({', '.join(dims)})"

    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    return "\n".join(
        [
            f"opset: {opsets}",
            "inputs:",
            *map(line, model.graph.input),
            "outputs:",
            *map(line, model.graph.output),
        ]
    )
