"""DyReLU, hard sigmoid and the scale-aware attention against values worked out by hand."""

import torch
from torch.nn.functional import hardsigmoid as hard_sigmoid

from dyhead_d2.layers import DyReLU, ScaleAttention


def test_hard_sigmoid_values():
    x = torch.tensor([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0])
    # ReLU6(x + 3) / 6: 0 below -3, 1 above 3, linear in between.
    expected = torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert torch.equal(hard_sigmoid(x), expected)


def _set_dyrelu(m: DyReLU, fc2_bias: list[float]) -> None:
    # fc1: 4 -> 1 summing the pooled channels; fc2: 1 -> 16 with weight 0, so each coefficient is
    # hard_sigmoid(bias) regardless of the input, which makes the output easy to work out.
    with torch.no_grad():
        m.fc1.weight.fill_(1.0)
        m.fc1.bias.zero_()
        m.fc2.weight.zero_()
        m.fc2.bias.copy_(torch.tensor(fc2_bias))


def test_dyrelu_constant_coefficients():
    m = DyReLU(4, reduction=4)
    # Biases chosen so hard_sigmoid gives a1 -> 0.75, b1 -> 0.25, a2 -> 0.5, b2 -> 1.0 for every
    # channel (hard_sigmoid(1.5)=0.75, (-1.5)=0.25, (0)=0.5, (3)=1.0).
    _set_dyrelu(m, [1.5] * 4 + [-1.5] * 4 + [0.0] * 4 + [3.0] * 4)
    # So a1 = (0.75-0.5)*2+1 = 1.5, b1 = 0.25-0.5 = -0.25, a2 = (0.5-0.5)*2 = 0, b2 = 0.5.
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 2, 3).repeat(1, 4, 1, 1)
    expected = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.25, 2.75]).view(1, 1, 2, 3).repeat(1, 4, 1, 1)
    # e.g. x=1: max(1.5 - 0.25, 0 + 0.5) = 1.25; x=-2: max(-3.25, 0.5) = 0.5.
    torch.testing.assert_close(m(x), expected)


def test_dyrelu_input_dependent_coefficients():
    m = DyReLU(4, reduction=4)
    with torch.no_grad():
        m.fc1.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))  # hidden = relu(mean of channel 0)
        m.fc1.bias.zero_()
        m.fc2.weight.fill_(1.0)  # every coefficient pre-activation = hidden
        m.fc2.bias.zero_()
    x = torch.zeros(2, 4, 1, 2)
    # image 0: mean 1.5 -> every coefficient hard_sigmoid(1.5) = 0.75
    x[0, 0] = torch.tensor([1.0, 2.0])
    x[1, 0] = torch.tensor([-1.0, -3.0])  # image 1: relu(-2) = 0 -> every coefficient 0.5
    x[:, 1] = torch.tensor([-1.0, 4.0])
    out = m(x)
    # image 0: a1 = 1.5, b1 = 0.25, a2 = 0.5, b2 = 0.25 -> max(1.5x + 0.25, 0.5x + 0.25)
    # image 1: a1 = 1, b1 = 0, a2 = 0, b2 = 0 -> plain ReLU
    assert torch.allclose(out[0, 0], torch.tensor([1.75, 3.25]))
    assert torch.allclose(out[0, 1], torch.tensor([-0.25, 6.25]))
    assert torch.allclose(out[0, 2], torch.tensor([0.25, 0.25]))
    assert torch.allclose(out[1, 0], torch.tensor([0.0, 0.0]))
    assert torch.allclose(out[1, 1], torch.tensor([0.0, 4.0]))
    assert torch.allclose(out[1, 3], torch.tensor([0.0, 0.0]))


def test_scale_attention_values():
    m = ScaleAttention(2)
    with torch.no_grad():
        m.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        m.conv.bias.fill_(0.5)
    x = torch.zeros(3, 2, 2, 2)
    x[0, 0] = 2.0  # pooled (2, 0): z = 2.5 -> relu 2.5 -> hard_sigmoid = 5.5/6
    x[1, 1] = 4.0  # pooled (0, 4): z = -3.5 -> relu 0 -> hard_sigmoid = 0.5
    x[2, 0, 0, 0] = 40.0  # pooled (10, 0): z = 10.5 -> saturates at 1
    out = m(x)
    assert out.shape == (3, 1, 1, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([5.5 / 6, 0.5, 1.0]))
