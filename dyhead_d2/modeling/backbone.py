"""DyHeadBackbone: a Detectron2 backbone that runs DyHead blocks on the outputs of an FPN."""

from __future__ import annotations

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from torch import Tensor

from ..layers import DyHead

__all__ = ["MEMORY_FORMATS", "DyHeadBackbone"]

MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


class DyHeadBackbone(Backbone):
    """Wraps a pyramid backbone (usually Detectron2's FPN with ``LastLevelP6P7`` on "p5") and
    applies :class:`dyhead_d2.DyHead` to its levels.

    The output has the same feature names and strides as the wrapped backbone and
    ``dyhead.out_channels`` channels. Images are padded to a multiple of the largest stride (128 for
    P7), which keeps every level exactly half of the previous one, as DyHead requires.
    """

    def __init__(
        self,
        *,
        fpn: Backbone,
        dyhead: DyHead,
        in_features: list[str] | None = None,
        size_divisibility: int | None = None,
        memory_format: str = "auto",
    ):
        """
        Args:
            fpn: a Backbone returning a pyramid whose levels are successively stride-2 apart.
            dyhead: the DyHead tower; its ``in_channels`` must match the pyramid's channels.
            in_features: the pyramid levels to use, fine to coarse. Default: all of them.
            size_divisibility: pad images to a multiple of this. Default: the largest stride,
                as the authors do. MMDetection's "simple" setting pads to 32 only; the coarse
                levels are then rounded up, which DyHead handles.
            memory_format: the memory layout ``fpn`` and DyHead run in. ``"channels_last"``
                converts the images to channels-last (N, H, W, C) memory before ``fpn``;
                convolutions, norms, pooling and DyHead's sampled path keep that layout.
                ``"contiguous"`` leaves them (N, C, H, W), as Detectron2 does. ``"auto"``
                (default) is channels-last for inference (eval mode) on the CPU, where it made
                the R-50 backbone's convolutions about 1.4x faster, and contiguous in training
                (its convolution backward was slower channels-last) and on other devices (not
                measured). The function is the same either way: outputs differ by float rounding
                only, and they are contiguous (N, C, H, W) in every case.
        """
        super().__init__()
        self.fpn = fpn
        self.dyhead = dyhead
        shapes = fpn.output_shape()
        if in_features is None:
            in_features = sorted(shapes, key=lambda k: shapes[k].stride)
        unknown = [f for f in in_features if f not in shapes]
        if unknown:
            raise ValueError(
                f"DyHeadBackbone: in_features {unknown} are not produced by the wrapped backbone, "
                f"which outputs {sorted(shapes)}"
            )
        strides = [shapes[f].stride for f in in_features]
        for prev, (name, stride) in zip(strides, list(zip(in_features, strides))[1:]):
            if stride != 2 * prev:
                raise ValueError(
                    f"DyHeadBackbone: feature {name!r} has stride {stride}, expected {2 * prev} "
                    f"(in_features {in_features} must be successive stride-2 levels, fine to "
                    "coarse)"
                )
        for f in in_features:
            if shapes[f].channels != dyhead.in_channels:
                raise ValueError(
                    f"DyHeadBackbone: feature {f!r} has {shapes[f].channels} channels but the "
                    f"DyHead tower expects in_channels={dyhead.in_channels}"
                )
        self.in_features = list(in_features)
        self._out_features = list(in_features)
        self._out_feature_strides = {f: shapes[f].stride for f in in_features}
        self._out_feature_channels = {f: dyhead.out_channels for f in in_features}
        if size_divisibility is None:
            size_divisibility = max(max(strides), fpn.size_divisibility)
        elif size_divisibility < fpn.size_divisibility:
            raise ValueError(
                f"DyHeadBackbone: size_divisibility={size_divisibility} is smaller than the "
                f"wrapped backbone's {fpn.size_divisibility}"
            )
        self._size_divisibility = size_divisibility
        self._square_pad = fpn.padding_constraints.get("square_size", 0)
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"DyHeadBackbone: unknown memory_format {memory_format!r}; expected one of "
                f"{', '.join(MEMORY_FORMATS)}"
            )
        self.memory_format = memory_format

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(N, 3, H, W) images with H, W multiples of ``size_divisibility`` -> dict of levels."""
        if self.runs_channels_last(x):
            x = x.contiguous(memory_format=torch.channels_last)
        pyramid = self.fpn(x)
        outputs = self.dyhead([pyramid[f] for f in self.in_features])
        # The "sampled" DyHead returns channels-last tensors. Detectron2's heads expect what its
        # backbones return, contiguous (N, C, H, W): RetinaNet's inference, for one, reshapes the
        # head's logits and applies an in-place sigmoid, which on channels-last logits is a view
        # and would overwrite the head's outputs.
        return {f: out.contiguous() for f, out in zip(self.in_features, outputs)}

    def runs_channels_last(self, x: Tensor) -> bool:
        """Whether :meth:`forward` converts ``x`` to channels-last (see ``memory_format``); never
        while tracing (e.g. for ONNX export, whose graph has no memory layout)."""
        if torch.jit.is_tracing() or self.memory_format == "contiguous":
            return False
        if self.memory_format == "channels_last":
            return True
        return not self.training and x.device.type == "cpu"

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(
                channels=self._out_feature_channels[f], stride=self._out_feature_strides[f]
            )
            for f in self._out_features
        }
