"""The COCO configs' detectors, built small, and checkpoints of them in the released layouts:
the inputs of the checkpoint conversion and fine-tuning tests (needs detectron2)."""

import torch
import torchvision
from detectron2.config import instantiate

from dyhead_d2.config import load_config
from dyhead_d2.model_zoo import get_config_file

from .checkpoint_layouts import Randn, mmdet_tower_and_head

NUM_CLASSES = 3
BLOCKS = 2
SMALL = [f"model.backbone.dyhead.num_blocks={BLOCKS}", f"model.num_classes={NUM_CLASSES}"]


def build(config: str, overrides=(), seed: int = 0):
    """The model of ``configs/COCO/<config>`` with ``overrides``, seeded, in eval mode."""
    cfg = load_config(get_config_file(f"COCO/{config}"), list(overrides))
    torch.manual_seed(seed)
    return instantiate(cfg.model).eval()


def randomise_(sd: dict, r: Randn) -> dict:
    """Every float entry random (variances positive), so no value is an initialisation's."""
    for k, v in sd.items():
        if v.is_floating_point():
            sd[k] = r(*v.shape).abs() + 0.5 if k.endswith("running_var") else r(*v.shape)
    return sd


@torch.no_grad()
def calibrate_norms_(module, x, r: Randn):
    """Set every BatchNorm's statistics to those of its input on ``x`` and give it a random
    affine transform: random weights with sane activations (a random ResNet-50 otherwise grows
    them to ~1e3, where every deformable sample falls outside the map and DyHead's output no
    longer depends on its input)."""

    def set_stats(m, args):
        m.running_mean.copy_(args[0].mean(dim=(0, 2, 3)))
        m.running_var.copy_(args[0].var(dim=(0, 2, 3)))
        m.weight.copy_(1 + 0.3 * r(*m.weight.shape))
        m.bias.copy_(0.3 * r(*m.bias.shape))

    norms = [m for m in module.modules() if hasattr(m, "running_var")]
    hooks = [m.register_forward_pre_hook(set_stats) for m in norms]
    module.eval()(x)
    for h in hooks:
        h.remove()
    assert norms


def image(seed=3):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(3, 100, 120, generator=g) * 255, "height": 100, "width": 120}]


# The authors' RetinaNet and Faster R-CNN heads: Detectron2's own, COCO's 80 classes.
RETINANET_HEAD = {
    **{
        f"head.{s}.{i}.weight": (256, 256, 3, 3)
        for s in ("cls_subnet", "bbox_subnet")
        for i in (0, 2, 4, 6)
    },
    **{f"head.{s}.{i}.bias": (256,) for s in ("cls_subnet", "bbox_subnet") for i in (0, 2, 4, 6)},
    "head.cls_score.weight": (9 * 80, 256, 3, 3),
    "head.cls_score.bias": (9 * 80,),
    "head.bbox_pred.weight": (9 * 4, 256, 3, 3),
    "head.bbox_pred.bias": (9 * 4,),
}
FASTER_RCNN_HEADS = {
    "proposal_generator.rpn_head.conv.weight": (256, 256, 3, 3),
    "proposal_generator.rpn_head.conv.bias": (256,),
    "proposal_generator.rpn_head.objectness_logits.weight": (3, 256, 1, 1),
    "proposal_generator.rpn_head.objectness_logits.bias": (3,),
    "proposal_generator.rpn_head.anchor_deltas.weight": (12, 256, 1, 1),
    "proposal_generator.rpn_head.anchor_deltas.bias": (12,),
    "roi_heads.box_head.fc1.weight": (1024, 256 * 7 * 7),
    "roi_heads.box_head.fc1.bias": (1024,),
    "roi_heads.box_head.fc2.weight": (1024, 1024),
    "roi_heads.box_head.fc2.bias": (1024,),
    "roi_heads.box_predictor.cls_score.weight": (81, 1024),
    "roi_heads.box_predictor.cls_score.bias": (81,),
    "roi_heads.box_predictor.bbox_pred.weight": (320, 1024),
    "roi_heads.box_predictor.bbox_pred.bias": (320,),
}


def torchvision_resnet50(caffe: bool, images, seed: int = 5):
    """torchvision's ResNet-50, random, its BatchNorms calibrated on ``images``. ``caffe`` moves
    each stage's stride from the 3x3 to the first 1x1 convolution, as MMDetection's
    ``style='caffe'``."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet50()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.num_batches_tracked.fill_(1000)
    if caffe:
        for layer in (net.layer2, net.layer3, net.layer4):
            layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    calibrate_norms_(net, images, Randn(seed))
    return net.eval()


def mmdet_checkpoint(net, pred_kernel: int):
    r = Randn(13)
    sd = {"backbone." + k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    for k, c_in in enumerate((512, 1024, 2048)):  # FPN(start_level=1): C3..C5
        sd[f"neck.0.lateral_convs.{k}.conv.weight"] = r.w(256, c_in, 1, 1)
        sd[f"neck.0.lateral_convs.{k}.conv.bias"] = r(256)
    for k in range(5):  # P3..P5 outputs, then P6 and P7 (add_extra_convs="on_output")
        sd[f"neck.0.fpn_convs.{k}.conv.weight"] = r.w(256, 256, 3, 3)
        sd[f"neck.0.fpn_convs.{k}.conv.bias"] = r(256)
    sd.update(mmdet_tower_and_head(r, 256, BLOCKS, NUM_CLASSES, 5, pred_kernel))
    sd["bbox_head.atss_cls.bias"] = torch.full((NUM_CLASSES,), 0.5)
    return {"meta": {"epoch": 12}, "state_dict": sd}
