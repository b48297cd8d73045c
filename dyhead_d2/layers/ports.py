"""The four choices in which DyHead's ports differ, stated once per port.

The authors' Detectron2 port and MMDetection's differ in four ways that released weights depend
on: how the high branch reads the finer level's offset/mask (``offset_mode``, see
:mod:`dyhead_d2.layers.offset_modes`), whether the deformable convolutions have a bias
(``dcn_bias``), whether the offset/mask convolution starts at zero (``zero_init_offset``) and how
the plain convolutions are initialised (``init_style``).
:class:`DyHeadPort` holds the four, checked once when it is made; :data:`PORTS` names the
settings the configs use. There is no default port: a model states which one it reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from types import MappingProxyType

from .offset_modes import check_offset_mode

__all__ = ["INIT_STYLES", "PORTS", "PORT_OPTIONS", "DyHeadPort", "resolve_port"]

INIT_STYLES = ("authors", "mmdet")


@dataclass(frozen=True)
class DyHeadPort:
    """One port's DyHead choices.

    Attributes:
        offset_mode: how the high branch reads the finer level's offset and mask: "official",
            "topleft", "aligned" or "mmdet_main_slice" (see
            :mod:`dyhead_d2.layers.offset_modes`).
        dcn_bias: whether the deformable convolutions have a bias (authors: True, MMDetection's
            releases: False).
        zero_init_offset: initialise the offset/mask convolution to zero (MMDetection's simple
            setting; a stable start from scratch).
        init_style: "authors" (PyTorch defaults for the offset conv and DyReLU, N(0, 0.01) for
            the scale-attention conv) or "mmdet" (N(0, 0.01) for every plain convolution and
            DyReLU layer).
    """

    offset_mode: str
    dcn_bias: bool
    zero_init_offset: bool
    init_style: str

    def __post_init__(self) -> None:
        check_offset_mode(self.offset_mode)
        for name in ("dcn_bias", "zero_init_offset"):
            value = getattr(self, name)
            # A string such as "False" would otherwise be a truthy, silent wrong choice.
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        if self.init_style not in INIT_STYLES:
            raise ValueError(
                f"Unknown init_style {self.init_style!r}; expected one of {', '.join(INIT_STYLES)}"
            )


PORT_OPTIONS = tuple(f.name for f in fields(DyHeadPort))

PORTS = MappingProxyType(
    {
        # The authors' Detectron2 port (github.com/microsoft/DynamicHead), with which their
        # released weights were trained: DCN biases, their CUDA kernel's reading of the offset.
        "authors": DyHeadPort(
            offset_mode="official", dcn_bias=True, zero_init_offset=False, init_style="authors"
        ),
        # MMDetection's released reproduction (R-50 caffe) and Swin-L models. Every released
        # MMDetection hands the full-size offset/mask to the high branch and mmcv's kernel reads
        # it as the authors' does, hence "official"; the offset conv is not zeroed "to follow
        # the official implementation".
        "mmdet_repro": DyHeadPort(
            offset_mode="official", dcn_bias=False, zero_init_offset=False, init_style="mmdet"
        ),
        # MMDetection's "simple" R-50 setting: as above, but the offset conv starts at zero.
        "mmdet_simple": DyHeadPort(
            offset_mode="official", dcn_bias=False, zero_init_offset=True, init_style="mmdet"
        ),
        # For training new models (the quickstart): each coarse pixel reads the offset predicted
        # where it lies, and a zero offset conv for a stable start from scratch.
        "new_training": DyHeadPort(
            offset_mode="aligned", dcn_bias=True, zero_init_offset=True, init_style="mmdet"
        ),
    }
)


def resolve_port(
    port: str | DyHeadPort | None = None,
    *,
    owner: str = "DyHead",
    offset_mode: str | None = None,
    dcn_bias: bool | None = None,
    zero_init_offset: bool | None = None,
    init_style: str | None = None,
) -> DyHeadPort:
    """The :class:`DyHeadPort` a module is built with.

    ``port`` is a name in :data:`PORTS` or a :class:`DyHeadPort`; each option given (not None)
    replaces that port's value, so a config can pick a port and change one choice (e.g.
    ``model.backbone.dyhead.dcn_bias=True``). Without a port all four options must be given.
    ``owner`` names the module in the error messages.
    """
    given = {
        k: v
        for k, v in zip(PORT_OPTIONS, (offset_mode, dcn_bias, zero_init_offset, init_style))
        if v is not None
    }
    if port is None:
        missing = [k for k in PORT_OPTIONS if k not in given]
        if missing:
            raise TypeError(
                f"{owner} needs a port ({', '.join(map(repr, PORTS))} or a DyHeadPort) or all of "
                f"{', '.join(PORT_OPTIONS)}; missing: {', '.join(missing)}"
            )
        return DyHeadPort(**given)
    if isinstance(port, str):
        if port not in PORTS:
            raise ValueError(
                f"{owner}: unknown port {port!r}; expected one of {', '.join(map(repr, PORTS))} "
                "or a DyHeadPort"
            )
        port = PORTS[port]
    elif not isinstance(port, DyHeadPort):
        raise TypeError(
            f"{owner}: port must be a preset name or a DyHeadPort, got {type(port).__name__}"
        )
    return replace(port, **given) if given else port
