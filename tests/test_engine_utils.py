"""The training-script helpers: gradient clipping as an optimizer hook, autocast on CPU."""

import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from dyhead_d2.config import resolve_device  # noqa: E402
from dyhead_d2.engine import AutocastForward, add_gradient_clipping  # noqa: E402


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


def test_precision_on_cpu_follows_native_bfloat16_support():
    from dyhead_d2.engine import choose_precision

    # "auto": bfloat16 only where the CPU computes it natively, quietly float32 elsewhere.
    p = choose_precision("cpu", amp_enabled=False, cpu_bfloat16="auto", native_bfloat16=True)
    assert (p.mode, p.warn) == ("cpu_bfloat16", False)
    p = choose_precision("cpu", amp_enabled=False, cpu_bfloat16="auto", native_bfloat16=False)
    assert (p.mode, p.warn) == ("float32", False) and "no native bfloat16" in p.reason
    # Asked for explicitly (train.amp.enabled on CPU, or cpu_bfloat16=True): same decision, but a
    # warning where the CPU would only emulate it.
    for amp, cpu_bf16 in ((True, "auto"), (False, True), (True, True)):
        p = choose_precision("cpu", amp, cpu_bf16, native_bfloat16=False)
        assert (p.mode, p.warn) == ("float32", True), (amp, cpu_bf16)
        assert "asked for" in p.reason
        p = choose_precision("cpu", amp, cpu_bf16, native_bfloat16=True)
        assert (p.mode, p.warn) == ("cpu_bfloat16", False), (amp, cpu_bf16)
    # Off means off, whatever the CPU.
    p = choose_precision("cpu", amp_enabled=True, cpu_bfloat16=False, native_bfloat16=True)
    assert p.mode == "float32"
    with pytest.raises(ValueError, match="cpu_bfloat16"):
        choose_precision("cpu", False, "yes", native_bfloat16=True)


def test_precision_on_cuda_is_detectron2s_amp():
    from dyhead_d2.engine import choose_precision

    assert choose_precision("cuda", True, "auto", native_bfloat16=True).mode == "cuda_float16"
    assert choose_precision("cuda:1", False, True, native_bfloat16=True).mode == "float32"


def test_native_bfloat16_detection_reads_cpu_flags(monkeypatch, tmp_path):
    from dyhead_d2.engine import cpu_has_native_bfloat16

    # Without PyTorch's probes, the flags in /proc/cpuinfo decide.
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n")
    bf16 = tmp_path / "bf16"
    bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16\n")
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: avx2 amx_tile amx_bf16\n")
    assert not cpu_has_native_bfloat16(avx2)
    assert cpu_has_native_bfloat16(bf16)
    assert cpu_has_native_bfloat16(amx)
    assert not cpu_has_native_bfloat16(tmp_path / "absent")


def test_native_bfloat16_detection_agrees_with_pytorch():
    from dyhead_d2.engine import cpu_has_native_bfloat16

    if not hasattr(torch.cpu, "_is_avx512_bf16_supported"):
        pytest.skip("this PyTorch has no CPU bfloat16 probe")
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert cpu_has_native_bfloat16() == expected
