from detectron2.config import LazyCall as L
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform

from dyhead_d2.atss import ATSSHead
from dyhead_d2.modeling import ATSS

from ..data.inputs import constants
from .dyhead_backbone import backbone

# ATSS + DyHead in the authors' Detectron2 setting: no stacked head convs, 1x1 predictors, one
# square anchor of 8x the stride per location, Box2BoxTransform (10, 10, 5, 5).
model = L(ATSS)(
    backbone=backbone,
    head=L(ATSSHead)(
        in_channels=256,
        num_classes="${..num_classes}",
        num_levels=5,
        num_convs=0,
        pred_kernel_size=1,
        prior_prob=0.01,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    anchor_generator=L(DefaultAnchorGenerator)(
        sizes=[[64], [128], [256], [512], [1024]],
        aspect_ratios=[1.0],
        strides=[8, 16, 32, 64, 128],
        offset=0.5,
    ),
    box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0)),
    num_classes=80,
    anchor_topk=9,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    box_reg_loss_weight=2.0,
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_topk_by="score",
    test_nms_thresh=0.6,
    test_clip_before_nms=False,  # the authors (and Detectron2) clip only after NMS
    max_detections_per_image=100,
    pixel_mean=constants.imagenet_bgr256_mean,  # the MSRA caffe weights' BGR input, std 1
    pixel_std=constants.imagenet_bgr256_std,
    input_format="BGR",
)
