"""ATSSHead: shapes, initialisation, per-level scales, module names, tower wiring."""

import math

import pytest
import torch

from dyhead_d2.atss import ATSSHead

C, K = 32, 3  # GroupNorm(32) needs a multiple of 32 channels
SIZES = ((8, 6), (4, 3))


def features(batch=2, channels=C, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, h, w, generator=g) for h, w in SIZES]


@pytest.mark.parametrize("num_convs", [0, 2])
@pytest.mark.parametrize("kernel", [1, 3])
def test_output_shapes(num_convs, kernel):
    head = ATSSHead(
        in_channels=C,
        num_classes=K,
        num_levels=2,
        num_convs=num_convs,
        conv_channels=64,
        pred_kernel_size=kernel,
    )
    logits, deltas, ctr = head(features())
    assert [tuple(t.shape) for t in logits] == [(2, K, h, w) for h, w in SIZES]
    assert [tuple(t.shape) for t in deltas] == [(2, 4, h, w) for h, w in SIZES]
    assert [tuple(t.shape) for t in ctr] == [(2, 1, h, w) for h, w in SIZES]
    assert head.cls_logits.kernel_size == (kernel, kernel)
    # Predictors read the tower (conv_channels) or, without one, the features (in_channels).
    assert head.cls_logits.in_channels == (64 if num_convs else C)


def test_initialisation():
    torch.manual_seed(0)
    # 256 channels so even the centerness conv has 256 weights: the std bounds below are > 4
    # standard errors wide.
    head = ATSSHead(in_channels=256, num_classes=K, num_levels=2, num_convs=1, prior_prob=0.01)
    bias = head.cls_logits.bias
    torch.testing.assert_close(bias, torch.full((K,), -math.log(99.0)))
    torch.testing.assert_close(bias.sigmoid(), torch.full((K,), 0.01))
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 1 + 3
    for m in convs:
        assert 0.008 < m.weight.std().item() < 0.012 and abs(m.weight.mean().item()) < 0.003
        if m is not head.cls_logits:
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    assert all(torch.equal(s.scale, torch.ones(1)) for s in head.scales)


def test_scales_multiply_each_level_deltas():
    head = ATSSHead(in_channels=C, num_classes=K, num_levels=2)
    feats = features()
    before = head(feats)[1]
    with torch.no_grad():
        head.scales[1].scale.fill_(2.0)
    after = head(feats)[1]
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], 2.0 * before[1])
    # The scale is learnable: it gets a gradient from that level only.
    after[1].sum().backward()
    assert head.scales[1].scale.grad is not None and head.scales[0].scale.grad is None


def test_box_and_centerness_come_from_the_box_tower():
    torch.manual_seed(0)
    head = ATSSHead(in_channels=C, num_classes=K, num_levels=2, num_convs=1)
    feats = features()
    logits, deltas, ctr = head(feats)
    with torch.no_grad():
        head.cls_tower[0].weight.mul_(-3.0)
    logits2, deltas2, ctr2 = head(feats)
    assert not torch.allclose(logits2[0], logits[0])
    torch.testing.assert_close(deltas2[0], deltas[0])
    torch.testing.assert_close(ctr2[0], ctr[0])
    with torch.no_grad():
        head.bbox_tower[0].weight.mul_(-3.0)
    _, deltas3, ctr3 = head(feats)
    assert not torch.allclose(deltas3[0], deltas[0]) and not torch.allclose(ctr3[0], ctr[0])


def test_parameter_names():
    head = ATSSHead(in_channels=C, num_classes=K, num_levels=3, num_convs=2)
    tower = [f"{i}.{p}" for i in (0, 1, 3, 4) for p in ("weight", "bias")]
    expected = (
        [f"cls_tower.{n}" for n in tower]
        + [f"bbox_tower.{n}" for n in tower]
        + [
            f"{m}.{p}"
            for m in ("cls_logits", "bbox_pred", "centerness")
            for p in ("weight", "bias")
        ]
        + [f"scales.{i}.scale" for i in range(3)]
    )
    assert sorted(head.state_dict()) == sorted(expected)
    assert isinstance(head.cls_tower[1], torch.nn.GroupNorm) and head.cls_tower[1].num_groups == 32
    assert isinstance(head.cls_tower[2], torch.nn.ReLU)
    assert head.scales[0].scale.shape == (1,)

    plain = ATSSHead(in_channels=C, num_classes=K, num_levels=1)
    assert plain.cls_tower is None and plain.bbox_tower is None
    assert sorted(plain.state_dict()) == sorted(
        [f"{m}.{p}" for m in ("cls_logits", "bbox_pred", "centerness") for p in ("weight", "bias")]
        + ["scales.0.scale"]
    )
    no_norm = ATSSHead(in_channels=C, num_classes=K, num_levels=1, num_convs=1, norm=None)
    assert [type(m) for m in no_norm.bbox_tower] == [torch.nn.Conv2d, torch.nn.ReLU]


def test_bad_arguments():
    head = ATSSHead(in_channels=C, num_classes=K, num_levels=3)
    with pytest.raises(ValueError, match="built for 3 feature levels .* got 2"):
        head(features())
    with pytest.raises(ValueError, match="divisible by 32"):
        ATSSHead(in_channels=C, num_classes=K, num_levels=1, num_convs=1, conv_channels=48)
    with pytest.raises(ValueError, match="norm 'BN'"):
        ATSSHead(in_channels=C, num_classes=K, num_levels=1, norm="BN")
    with pytest.raises(ValueError, match="odd"):
        ATSSHead(in_channels=C, num_classes=K, num_levels=1, pred_kernel_size=2)
