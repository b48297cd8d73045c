"""fold_frozen_batchnorm: the folded model computes what the unfolded one does, and only frozen
norms are folded."""

import pytest
import torch

from . import needs_detectron2

needs_detectron2()

from detectron2.layers import Conv2d, FrozenBatchNorm2d  # noqa: E402
from torch import nn  # noqa: E402

from dyhead_d2.modeling import (  # noqa: E402
    fold_frozen_batchnorm,
    folded_for_inference,
    has_foldable_batchnorm,
)

from .d2_models import build_tiny_atss, make_input  # noqa: E402


def _randomise_frozen_norms(model, seed=0):
    """Pretrained-like statistics: identity norms would fold to the same weights."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g))
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.1)


def _frozen_model(dtype=torch.float32):
    model = build_tiny_atss(bottom_up="resnet_caffe").to(dtype).eval()
    with torch.no_grad():
        _randomise_frozen_norms(model)
    return model


def _levels(model, image):
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        return list(model.backbone(images.tensor).values())


def test_folded_equals_unfolded_float64():
    model = _frozen_model(torch.float64)
    folded = fold_frozen_batchnorm(model)
    image = make_input(96, 128, [], [])["image"].double()
    for a, b in zip(_levels(folded, image), _levels(model, image)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-10)


def test_folded_equals_unfolded_within_float32_rounding():
    model = _frozen_model()
    model.test_score_thresh = 0.0  # random weights score about 0.01 (the prior)
    folded = fold_frozen_batchnorm(model)
    image = make_input(96, 128, [[10, 10, 60, 50]], [1])["image"]
    with torch.no_grad():
        bottom_up = model.backbone.fpn.bottom_up
        image_n = model.preprocess_image([{"image": image}]).tensor
        got = folded.backbone.fpn.bottom_up(image_n)
        want = bottom_up(image_n)
    for name in want:
        scale = want[name].abs().max().item()
        assert (got[name] - want[name]).abs().max().item() <= 1e-5 * scale, name
    with torch.no_grad():
        got, want = folded([{"image": image}]), model([{"image": image}])
    got, want = got[0]["instances"], want[0]["instances"]
    assert len(got) == len(want) > 0
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.pred_boxes.tensor, want.pred_boxes.tensor, rtol=0, atol=1e-2)


def test_folds_every_frozen_norm_and_nothing_else():
    model = _frozen_model()
    gn = nn.GroupNorm(2, 8)
    bn = nn.BatchNorm2d(8).eval()
    extra = nn.ModuleList([Conv2d(8, 8, 3, norm=gn), Conv2d(8, 8, 3, norm=bn)])
    model.extra = extra
    frozen = [n for n, m in model.named_modules() if isinstance(_norm(m), FrozenBatchNorm2d)]
    assert len(frozen) > 10
    folded = fold_frozen_batchnorm(model)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in folded.modules())
    modules = dict(folded.named_modules())
    for name in frozen:
        conv = modules[name]
        assert conv.norm is None and conv.bias is not None
        assert conv.bias.requires_grad == conv.weight.requires_grad
    # Trainable norms are not folded: GroupNorm and BatchNorm stay, with their parameters.
    assert isinstance(folded.extra[0].norm, nn.GroupNorm)
    assert isinstance(folded.extra[1].norm, nn.BatchNorm2d)
    torch.testing.assert_close(folded.extra[1].norm.weight, bn.weight)
    # A copy: the original keeps its norms and its state dict (checkpoints stay unfolded).
    assert all(isinstance(conv.norm, FrozenBatchNorm2d) for conv in _convs(model, frozen))
    assert set(folded.state_dict()) != set(model.state_dict())


def _norm(module):
    return getattr(module, "norm", None)


def _convs(model, names):
    modules = dict(model.named_modules())
    return [modules[n] for n in names]


def test_inplace_folds_the_model_itself():
    model = _frozen_model()
    assert fold_frozen_batchnorm(model, inplace=True) is model
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())


def test_refuses_a_model_in_training_mode():
    model = _frozen_model().train()
    with pytest.raises(ValueError, match="model.eval"):
        fold_frozen_batchnorm(model)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())


def test_folded_for_inference_leaves_a_training_model_as_it_is():
    model = _frozen_model().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded = folded_for_inference(model)
    assert folded is not model and not folded.training and not has_foldable_batchnorm(folded)
    assert model.training and has_foldable_batchnorm(model)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_folded_for_inference_without_frozen_norms_is_the_model_itself():
    model = build_tiny_atss(bottom_up="resnet_basic")  # trainable BatchNorm: nothing to fold
    assert not has_foldable_batchnorm(model)
    assert folded_for_inference(model) is model
