"""The training-script helpers: gradient clipping as an optimizer hook, autocast on CPU."""

import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from dyhead_d2.engine import AutocastForward, add_gradient_clipping, resolve_device  # noqa: E402


def test_gradient_clipping_scales_the_global_norm_before_the_step():
    w = torch.nn.Parameter(torch.zeros(3))
    v = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w, v], lr=1.0)
    add_gradient_clipping(opt, max_norm=1.0)
    w.grad = torch.tensor([3.0, 0.0, 0.0])
    v.grad = torch.tensor([0.0, 4.0])  # global norm 5 -> scaled by 1/5
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, 0.0, 0.0]))
    torch.testing.assert_close(v.detach(), torch.tensor([0.0, -0.8]))
    # Below the threshold nothing changes.
    w.grad = torch.tensor([0.3, 0.0, 0.0])
    v.grad = torch.tensor([0.0, 0.4])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([-0.9, 0.0, 0.0]))
    with pytest.raises(ValueError, match="max_norm > 0"):
        add_gradient_clipping(opt, max_norm=0.0)


def test_autocast_forward_runs_in_bfloat16_and_keeps_weights_float32():
    linear = torch.nn.Linear(4, 2)
    wrapped = AutocastForward(linear, "cpu")
    out = wrapped(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16 and linear.weight.dtype == torch.float32
    assert set(wrapped.state_dict()) == {f"model.{k}" for k in linear.state_dict()}


def test_resolve_device():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
