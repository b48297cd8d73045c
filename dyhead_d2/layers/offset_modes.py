"""How the high branch of a DyHead block reads the offset/mask predicted at the finer level.

The high branch convolves ``x[l + 1]`` (size ``h x w``) with the offset/mask predicted on
``x[l]`` (size ``H x W``, ``H = 2h`` or ``2h - 1``), so the two ports had to choose which ``h x w``
part of the ``H x W`` map to use. Released weights were trained with their port's choice, hence
all are kept:

* ``"official"``: per image, the first ``C * h * w`` values of the flattened ``(C, H, W)`` map
  are read as a ``(C, h, w)`` map, for the offset and for the mask alike, so the rows used are a
  scrambled mix of the top rows (DynamicHead issue 25). The authors' CUDA kernel does this because
  it never checks shapes; so does mmcv's kernel (CPU and CUDA; checked from v1.4.2 to its main),
  which indexes ``offset[b]`` / ``mask[b]`` by raw pointer at the output size. Every released
  MMDetection (2.22.0 to 3.3.0) passes the **full-size** offset and mask to the high branch, so
  this is also how MMDetection's released weights were trained and evaluated: the reading of the
  authors' and of MMDetection's configs.
* ``"topleft"``: the top-left corner ``[..., :h, :w]`` of both maps, what a shape-checking
  kernel given a ``[:h, :w]`` slice would read.
* ``"aligned"``: output location ``(i, j)`` of the high branch uses the prediction at
  ``(2i, 2j)`` of the finer level, i.e. ``[..., ::2, ::2]``. That is the location a stride-2 3x3
  convolution with padding 1 (how FPN builds ``x[l + 1]`` from ``x[l]``) centres on, so each
  high-level pixel gets the offset predicted where it actually lies. The values are used
  unscaled, as in the other modes.
* ``"mmdet_main_slice"``: MMDetection's unreleased main branch after 3.3.0 (PR 11150, issue
  11146), with which no released weights were trained. It slices ``[:, :18, :h, :w]`` and
  ``[:, 18:, :h, :w]`` before the sigmoid; mmcv's kernel reads the non-contiguous offset slice's
  raw memory, so the offsets are read as in ``"official"``, while the sigmoid makes the mask slice
  a contiguous copy, so the masks really are the top-left corner. (mmcv's backward credits the
  offset gradients to the top-left positions it did not read; this mode's gradients are those of
  its forward.)
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["OFFSET_MODES", "check_offset_mode", "read_high_branch_offset"]

OFFSET_MODES = ("official", "topleft", "aligned", "mmdet_main_slice")

# How each mode reads (offsets, masks).
_READINGS = {
    "official": ("official", "official"),
    "topleft": ("topleft", "topleft"),
    "aligned": ("aligned", "aligned"),
    "mmdet_main_slice": ("official", "topleft"),
}


def check_offset_mode(offset_mode: str) -> str:
    if offset_mode not in OFFSET_MODES:
        raise ValueError(
            f"Unknown offset_mode {offset_mode!r}; expected one of {', '.join(OFFSET_MODES)} "
            "('official' = the authors' and MMDetection's released models, 'topleft' = top-left "
            "corner, 'mmdet_main_slice' = MMDetection's unreleased post-3.3.0 main branch, "
            "'aligned' = location-aligned)"
        )
    return offset_mode


def read_high_branch_offset(
    t: Tensor, out_size: tuple[int, int], offset_mode: str, *, is_mask: bool = False
) -> Tensor:
    """Read an ``(N, C, H, W)`` offset or mask map as ``(N, C, h, w)`` for the high branch.

    ``out_size`` is ``(h, w)``, the size of the coarser level, with ``h <= H`` and ``w <= W``.
    ``is_mask`` says which of the two ``t`` is; only ``"mmdet_main_slice"`` reads them differently.
    """
    check_offset_mode(offset_mode)
    reading = _READINGS[offset_mode][1 if is_mask else 0]
    h, w = out_size
    n, c = t.shape[:2]
    if reading == "official":
        return t.reshape(n, -1)[:, : c * h * w].reshape(n, c, h, w)
    if reading == "topleft":
        return t[:, :, :h, :w]
    return t[:, :, ::2, ::2][:, :, :h, :w]
