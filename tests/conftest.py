"""What the tests share: the ``cuda`` marker's rule here; shared fixtures below."""

from __future__ import annotations

import pytest
import torch


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Tests marked "cuda" need a CUDA device (tools/gpu_check.py runs them on one).
    if item.get_closest_marker("cuda") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
