"""DyReLU: DyHead's task-aware attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DyReLU"]


class DyReLU(nn.Module):
    """Dynamic ReLU with two linear pieces whose slopes and intercepts depend on the input.

    A squeeze-excitation branch (global average pool -> Linear -> ReLU -> Linear -> hard sigmoid)
    predicts per-channel ``a1, b1, a2, b2``; the output is ``max(x * a1 + b1, x * a2 + b2)`` with
    ``a1`` in [0, 2], ``a2`` in [-1, 1] and ``b1, b2`` in [-0.5, 0.5], so at initialisation
    (coefficients near 0.5) it behaves like a plain ReLU.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        if channels % reduction != 0:
            raise ValueError(
                f"DyReLU: channels ({channels}) must be divisible by reduction ({reduction})"
            )
        self.channels = channels
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, 4 * channels)

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The per-image, per-channel ``(a1, b1, a2, b2)``, each (N, C, 1, 1)."""
        n, c = x.shape[:2]
        y = x.mean(dim=(2, 3))
        # F.hardsigmoid is ReLU6(x + 3) / 6, the "h_sigmoid" of both DyHead ports.
        y = F.hardsigmoid(self.fc2(F.relu(self.fc1(y))))
        a1, b1, a2, b2 = y.view(n, 4, c, 1, 1).unbind(dim=1)
        return (a1 - 0.5) * 2.0 + 1.0, b1 - 0.5, (a2 - 0.5) * 2.0, b2 - 0.5

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        a1, b1, a2, b2 = self.coefficients(x)
        # addcmul: x * a + b in one pass over x instead of two.
        return torch.maximum(torch.addcmul(b1, x, a1), torch.addcmul(b2, x, a2))
