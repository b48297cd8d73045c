"""Deformable convolutions of deformable backbones (groups, offset groups, dilation, DCNv1)
against torchvision's deform_conv2d: outputs and every gradient, float64."""

import pytest
import torch
from torchvision.ops import deform_conv2d

from dyhead_d2.layers import DeformConv, modulated_deform_conv, sampled_grouped_deform_conv

TOL = 1e-8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: threads only add overhead on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _case(groups, offset_groups, stride, dilation, modulated, kind="fractional", seed=0):
    """Inputs of one deformable conv: 12 input channels, 8 outputs, a 3x3 kernel."""
    g = torch.Generator().manual_seed(seed)
    n, c, c_out, h, w, k = 2, 12, 8, 9, 11, 3
    pad = dilation
    ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    if kind == "fractional":  # many samples outside the image
        offset = 3 * torch.randn(n, 2 * offset_groups * k * k, ho, wo, generator=g).double()
    else:  # integer and half-integer positions, where the bilinear weights have kinks
        offset = torch.randint(-6, 7, (n, 2 * offset_groups * k * k, ho, wo), generator=g) / 2
        offset = offset.double()
    mask = torch.rand(n, offset_groups * k * k, ho, wo, generator=g, dtype=torch.float64)
    weight = torch.randn(c_out, c // groups, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    return x, offset, mask if modulated else None, weight, bias


def _outputs_and_grads(fn, inputs):
    """fn(*inputs), and the gradients of a fixed random projection of it w.r.t. every input."""
    leaves = [None if t is None else t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    g = torch.Generator().manual_seed(7)
    out.backward(torch.randn(out.shape, generator=g, dtype=out.dtype))
    return [out.detach()] + [None if t is None else t.grad for t in leaves]


NAMES = ("output", "grad input", "grad offset", "grad mask", "grad weight", "grad bias")
CASES = [
    # groups, offset groups, stride, dilation, modulated
    (4, 1, 1, 1, True),  # ResNeXt: grouped 3x3, one offset group
    (4, 1, 2, 1, True),
    (1, 3, 1, 1, True),  # deform_num_groups > 1
    (4, 2, 2, 1, True),
    (2, 2, 1, 2, True),  # res5_dilation=2
    (1, 1, 1, 2, False),
    (4, 1, 2, 1, False),  # DCNv1 (no mask)
    (1, 1, 1, 1, False),
]


@pytest.mark.parametrize("kind", ["fractional", "integer"])
@pytest.mark.parametrize("groups, offset_groups, stride, dilation, modulated", CASES)
def test_sampled_equals_torchvision(groups, offset_groups, stride, dilation, modulated, kind):
    inputs = _case(groups, offset_groups, stride, dilation, modulated, kind)

    def reference(x, offset, mask, weight, bias):
        return deform_conv2d(
            x, offset, weight, bias, stride, dilation, (dilation, dilation), mask=mask
        )

    def sampled(x, offset, mask, weight, bias):
        return modulated_deform_conv(
            x, offset, mask, weight, bias, stride, dilation, impl="sampled", dilation=dilation
        )

    ref = _outputs_and_grads(reference, inputs)
    got = _outputs_and_grads(sampled, inputs)
    for name, a, b in zip(NAMES, got, ref):
        if b is None:
            assert a is None, name
            continue
        assert a.shape == b.shape, name
        diff = (a - b).abs().max().item()
        assert diff <= TOL, f"{name}: max abs diff {diff}"


def test_grouped_path_is_the_one_group_path_on_one_group():
    # The grouped implementation also computes the one-group case (which modulated_deform_conv
    # sends to sampled_deform_conv): both equal torchvision's there too.
    x, offset, mask, weight, bias = _case(1, 1, 2, 1, True)
    want = deform_conv2d(x, offset, weight, bias, 2, 1, mask=mask)
    got = sampled_grouped_deform_conv(x, offset, mask, weight, bias, 2, 1, 1)
    assert (got - want).abs().max().item() <= TOL


def test_training_recomputes_the_columns():
    # The k*k-times-larger columns are not kept for the backward: what autograd saves is of
    # the order of the arguments.
    x, offset, mask, weight, bias = _case(4, 1, 1, 1, True)
    x = torch.randn(2, 12, 24, 24, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(2, 18, 24, 24, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 9, 24, 24, dtype=torch.float64, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = sampled_grouped_deform_conv(x, offset, mask, weight, bias, 1, 1, 1)
    columns = 2 * 24 * 24 * 9 * 12
    assert sum(saved) < columns, sum(saved)
    out.sum().backward()
    assert x.grad is not None and offset.grad is not None and mask.grad is not None


def test_deform_conv_module_checks_offset_and_mask():
    conv = DeformConv(8, 8, 3, padding=1, groups=2, deformable_groups=2, modulated=True)
    assert tuple(conv.weight.shape) == (8, 4, 3, 3) and conv.bias is None
    assert conv.offset_channels == 36
    x = torch.randn(1, 8, 5, 5)
    with pytest.raises(ValueError, match="offset has 18 channels, expected .* = 36"):
        conv(x, torch.zeros(1, 18, 5, 5), torch.ones(1, 18, 5, 5))
    with pytest.raises(ValueError, match="needs a mask"):
        conv(x, torch.zeros(1, 36, 5, 5))
    with pytest.raises(ValueError, match="mask has 9 channels, expected .* = 18"):
        conv(x, torch.zeros(1, 36, 5, 5), torch.ones(1, 9, 5, 5))
    unmodulated = DeformConv(8, 8, 3, padding=1, modulated=False)
    with pytest.raises(ValueError, match="takes none"):
        unmodulated(x, torch.zeros(1, 18, 5, 5), torch.ones(1, 9, 5, 5))
    with pytest.raises(ValueError, match="not divisible by groups=3"):
        DeformConv(8, 8, 3, groups=3)


@pytest.mark.parametrize("impl", ["sampled", "torchvision"])
def test_deform_conv_module_with_zero_offsets_is_a_convolution(impl):
    # Zero offsets sample the kernel's own taps: a grouped, dilated convolution (and a mask of
    # one leaves it unchanged), then the norm and the activation.
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm2d(8).eval()
    norm.running_mean.uniform_(-1, 1)
    conv = DeformConv(
        8, 8, 3, stride=2, padding=2, dilation=2, groups=4, norm=norm, activation=torch.relu,
        modulated=True, deform_impl=impl,
    )  # fmt: skip
    x = torch.randn(2, 8, 9, 10)
    offset = torch.zeros(2, 18, 5, 5)
    got = conv(x, offset, torch.ones(2, 9, 5, 5))
    want = torch.relu(norm(torch.nn.functional.conv2d(x, conv.weight, None, 2, 2, 2, 4)))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modulated", [True, False])
def test_non_finite_offsets_give_all_nan_output(modulated):
    # The guard of modulated_deform_conv covers the grouped path and the mask-less case too.
    x, offset, mask, weight, bias = _case(4, 1, 1, 1, modulated)
    offset[1, 5, 2, 3] = float("nan")
    out = modulated_deform_conv(x, offset, mask, weight, None, 1, 1, impl="sampled")
    assert torch.isnan(out).all()
