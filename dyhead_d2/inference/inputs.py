"""Which image files a command line names, and reading them as Detectron2's data loader does."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

import numpy as np
from detectron2.data import detection_utils
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "InputError", "find_images", "read_image"]

# What a folder or a glob is searched for (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """An input image that cannot be found or read; the message names it."""


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def find_images(inputs: Iterable[str]) -> list[str]:
    """The image files that ``inputs`` name, in order and without repeats.

    Each input is a file (taken as is, whatever its extension), a folder (its files with an
    image extension, sorted; not recursive) or a glob pattern (``**`` recurses; matches without
    an image extension are ignored). An input that yields no image is an :class:`InputError`.
    """
    found: dict[str, None] = {}
    for item in inputs:
        if os.path.isfile(item):
            matches = [item]
        elif os.path.isdir(item):
            names = sorted(os.listdir(item))
            matches = [os.path.join(item, n) for n in names if _is_image_name(n)]
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise InputError(
                    f"folder {item!r} has no image files ({', '.join(IMAGE_EXTENSIONS)})"
                )
        else:
            matches = sorted(glob.glob(item, recursive=True))
            matches = [m for m in matches if os.path.isfile(m) and _is_image_name(m)]
            if not matches:
                what = "glob pattern" if glob.has_magic(item) else "input"
                raise InputError(f"{what} {item!r} matches no image file")
        for m in matches:
            found.setdefault(m, None)
    if not found:
        raise InputError("no input images given")
    return list(found)


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """An (H, W, 3) uint8 array in ``format`` ("BGR" or "RGB"), EXIF orientation applied, as
    Detectron2's data loader reads it. Raises :class:`InputError` when it cannot."""
    try:
        return detection_utils.read_image(path, format=format)
    except UnidentifiedImageError as e:
        raise InputError(f"cannot read image {path!r}: not an image file Pillow can decode") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InputError(f"cannot read image {path!r}: {reason}") from e
