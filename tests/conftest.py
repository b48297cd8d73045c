"""Fixtures shared by test modules."""

import pytest

from dyhead_d2.benchmark.tf32 import tf32


@pytest.fixture
def tf32_off():
    """Full float32 for cuDNN convolutions and CUDA matrix products during one test, PyTorch's
    flags restored after: a CUDA-vs-CPU float32 comparison measures our code, not TF32's
    rounding (tests/test_tf32.py shows TF32 alone exceeds those tolerances)."""
    with tf32(False):
        yield
