"""The quickstart and the R-50 reproduction model on fake CUDA tensors under CUDA autocast
float16, on a machine without a GPU: a tensor created on the wrong device (e.g. a factory
function without ``device=``) or left in the wrong dtype fails here.

``torch._subclasses.fake_tensor.FakeTensorMode`` gives every tensor a device, dtype and shape but
no values; every op runs its shape rule (torchvision's ``deform_conv2d`` and ``nms`` have them),
mixing devices raises ``FakeTensorDeviceMismatchError``, and ``torch.autocast("cuda")`` casts as
on a GPU once it can be entered (its constructor checks ``torch.cuda.is_available()``).

What this cannot cover, as seen with torch 2.14 on a CPU-only machine:

* values, so nothing that reads one: Detectron2's batching (``ImageList.from_tensors`` reads
  image sizes on the host; done here on the CPU, as a GPU run does), the read of the DyHead
  check and the number of positives (``check_in_forward`` is off; the test stops at
  ``model.losses``), and inference from the candidates' compaction on (NMS, postprocessing):
  data-dependent shapes raise ``DynamicOutputShapeException``;
* the backward: the autograd engine asks the CUDA runtime for the device's context
  (``RuntimeError: hasPrimaryContext expects a valid device index``);
* real kernels: cuDNN, TF32 (see test_tf32.py), numerical differences, speed, memory.
"""

from unittest import mock

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from . import needs_detectron2

needs_detectron2()

from detectron2.config import instantiate  # noqa: E402
from detectron2.structures import ImageList  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from dyhead_d2.config import load_config  # noqa: E402

from .d2_models import make_input  # noqa: E402
from .tiny_quickstart import QUICKSTART, ROOT, TINY  # noqa: E402

CUDA = torch.device("cuda", 0)
R50 = "configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py"


def cuda_autocast_float16():
    """``torch.autocast("cuda", float16)``, entered later under fake mode."""
    with mock.patch("torch.cuda.is_available", return_value=True):
        return torch.autocast("cuda", dtype=torch.float16)


def build(config, deform_impl):
    overrides = [*TINY, "model.backbone.dyhead.num_blocks=2"] if config == QUICKSTART else []
    cfg = load_config(str(ROOT / config), overrides)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    for module in model.modules():
        if hasattr(module, "deform_impl"):
            module.deform_impl = deform_impl
    size = 192 if config == QUICKSTART else 320
    inputs = [
        make_input(size, size, [[10, 12, 80, 90], [100, 20, 180, 110]], [1, 3], seed=i)
        for i in range(2)
    ]
    for x in inputs:
        x["image"] = x["image"].to(torch.uint8)  # as Detectron2's data loader gives them
    # Detectron2's batching reads the image sizes on the host: on the CPU, as a GPU run does.
    normalised = [(x["image"] - model.pixel_mean) / model.pixel_std for x in inputs]
    images = ImageList.from_tensors(
        normalised,
        model.backbone.size_divisibility,
        padding_constraints=model.backbone.padding_constraints,
    )
    return model, inputs, images


def on_cuda(tensors, dtype=None):
    for t in tensors:
        assert t.device == CUDA, t.device
        if dtype is not None:
            assert t.dtype == dtype, t.dtype


def head_outputs(model, images):
    features = model.backbone(images.tensor.to(CUDA))
    features = [features[f] for f in model.head_in_features]
    on_cuda(features)
    predictions = model.head(features)
    logits, deltas, centerness = predictions
    on_cuda(logits + centerness, torch.float16)  # the predictors ran under autocast
    on_cuda(deltas, torch.float32)  # times the float32 per-level scales
    logits, deltas, centerness = model._transpose_dense_predictions(
        predictions, [model.num_classes, 4, 1]
    )
    return model.anchor_generator(features), logits, deltas, centerness


@pytest.mark.parametrize(
    "config, deform_impl",
    [
        (QUICKSTART, "auto"),  # torchvision's op on CUDA
        pytest.param(QUICKSTART, "sampled", marks=pytest.mark.slow),
        pytest.param(R50, "auto", marks=pytest.mark.slow),
    ],
)
def test_training_forward_and_inference_up_to_nms_on_fake_cuda(config, deform_impl):
    model, inputs, images = build(config, deform_impl)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to(CUDA)
        on_cuda([*model.parameters(), *model.buffers()])
        model.backbone.dyhead.check_in_forward = False  # its read needs values
        autocast = cuda_autocast_float16()

        model.train()
        with autocast, EventStorage():
            anchors, logits, deltas, centerness = head_outputs(model, images)
            gt = [x["instances"].to(model.device) for x in inputs]
            labels, matched = model.label_anchors(anchors, gt)
            on_cuda(labels, torch.int64)
            on_cuda(matched, torch.float32)
            losses = model.losses(anchors, logits, labels, deltas, matched, centerness)
        assert set(losses) == {"loss_cls", "loss_box_reg", "loss_centerness"}
        on_cuda(losses.values(), torch.float32)
        pending = model.backbone.dyhead.pending_check()
        on_cuda([pending], torch.int64)

        model.eval()
        with autocast, torch.no_grad():
            anchors, logits, deltas, centerness = head_outputs(model, images)
            for i, image_size in enumerate(images.image_sizes):
                boxes, scores, classes, valid = model.decode_candidates(
                    anchors,
                    [x[i] for x in logits],
                    [x[i] for x in deltas],
                    [x[i] for x in centerness],
                    image_size,
                )
                on_cuda([boxes, scores], torch.float32)  # into NMS in float32
                on_cuda([classes], torch.int64)
                on_cuda([valid], torch.bool)
                # Fixed sizes: min(1000, anchors x classes) per level.
                per_level = [
                    min(model.test_topk_candidates, len(a) * model.num_classes) for a in anchors
                ]
                assert boxes.shape == (sum(per_level), 4)


def test_a_tensor_on_the_wrong_device_fails():
    # What the test above relies on: fake CUDA and CPU tensors do not mix.
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.zeros(3, device=CUDA)
        with pytest.raises(RuntimeError, match="same device"):
            x + torch.arange(3)
        with cuda_autocast_float16():
            y = torch.nn.functional.linear(torch.zeros(2, 3, device=CUDA), x.expand(4, 3))
        assert y.dtype == torch.float16
