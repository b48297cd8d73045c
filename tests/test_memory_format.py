"""DyHeadBackbone's memory_format: when the backbone runs channels-last, and that it computes the
same function as contiguous memory."""

import copy

import pytest
import torch

from . import needs_detectron2

needs_detectron2()

from detectron2.utils.events import EventStorage  # noqa: E402

from .d2_models import build_tiny_atss, make_input  # noqa: E402


def _batch(dtype=torch.float32):
    batch = [
        make_input(96, 128, [[10, 10, 60, 50], [30, 40, 90, 90]], [1, 2], seed=s) for s in (0, 1)
    ]
    for x in batch:
        x["image"] = x["image"].to(dtype)
    return batch


def _layout_seen_by_bottom_up(model, batch) -> bool:
    """Whether the bottom-up network received a channels-last image."""
    seen = []
    hook = model.backbone.fpn.bottom_up.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        if model.training:
            with EventStorage():
                model(batch)
        else:
            with torch.no_grad():
                model(batch)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize(
    "memory_format, training, channels_last",
    [
        ("auto", False, True),  # CPU inference
        ("auto", True, False),  # training
        ("contiguous", False, False),
        ("channels_last", False, True),
        ("channels_last", True, True),
    ],
)
def test_when_the_backbone_runs_channels_last(memory_format, training, channels_last):
    model = build_tiny_atss(bottom_up="resnet_caffe")
    model.backbone.memory_format = memory_format
    model.train(training)
    assert _layout_seen_by_bottom_up(model, _batch()) is channels_last


def test_never_channels_last_while_tracing():
    model = build_tiny_atss(bottom_up="resnet_caffe").eval()
    image = _batch()[0]["image"]
    assert model.backbone.runs_channels_last(image[None])
    seen = []

    def record(x):
        seen.append(model.backbone.runs_channels_last(x))
        return x.sum()

    torch.jit.trace(record, (image[None],), check_trace=False)
    assert seen == [False]


def test_unknown_memory_format_is_refused():
    from detectron2.config import instantiate

    from .d2_models import tiny_atss_config

    cfg = tiny_atss_config()
    cfg.backbone.memory_format = "nhwc"
    with pytest.raises(ValueError, match="unknown memory_format 'nhwc'"):
        instantiate(cfg)


def test_channels_last_inference_equals_contiguous():
    # float64, so that only summation order can differ; outputs stay contiguous (N, C, H, W).
    model = build_tiny_atss(bottom_up="resnet_caffe", num_blocks=2).double().eval()
    model.backbone.memory_format = "contiguous"
    other = copy.deepcopy(model)
    other.backbone.memory_format = "channels_last"
    image = _batch(torch.float64)[0]["image"]
    with torch.no_grad():
        want = model.backbone(model.preprocess_image([{"image": image}]).tensor)
        got = other.backbone(other.preprocess_image([{"image": image}]).tensor)
    for name in want:
        assert got[name].is_contiguous()
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12)


def test_channels_last_training_equals_contiguous():
    # Losses and every gradient of a training step, float64.
    model = build_tiny_atss(bottom_up="resnet_caffe", num_blocks=2).double().train()
    model.backbone.memory_format = "contiguous"
    other = copy.deepcopy(model)
    other.backbone.memory_format = "channels_last"
    results = []
    for m in (model, other):
        with EventStorage():
            losses = m(_batch(torch.float64))
        sum(losses.values()).backward()
        grads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
        results.append((losses, grads))
    (want_losses, want_grads), (got_losses, got_grads) = results
    assert len(want_grads) > 50 and set(got_grads) == set(want_grads)
    for k in want_losses:
        torch.testing.assert_close(got_losses[k], want_losses[k], rtol=1e-12, atol=1e-14)
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], rtol=1e-10, atol=1e-12)
