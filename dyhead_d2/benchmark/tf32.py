"""TF32 on or off for a block of code, restored on exit.

On NVIDIA GPUs since Ampere, PyTorch may run float32 convolutions and matrix products in TF32
(inputs rounded to 10 mantissa bits, float32 accumulation): by default it does for cuDNN
convolutions (``torch.backends.cudnn.allow_tf32``) and not for matrix products
(``torch.backends.cuda.matmul.allow_tf32``). Detectron2 keeps PyTorch's defaults. A comparison
of CUDA float32 results with the CPU at float32 tolerances needs TF32 off; how fast and how
close TF32 is are measured with it on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["tf32"]


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """cuDNN convolutions and CUDA matrix products in TF32 (``enabled``) or in full float32
    within the block; both flags are restored on exit, also on an exception."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
