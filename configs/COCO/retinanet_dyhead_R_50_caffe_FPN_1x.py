# RetinaNet + DyHead, R-50 (MSRA caffe weights), 1x: the authors'
# configs/dyhead_r50_retina_fpn_1x.yaml, 39.9 box AP on COCO val2017. Detectron2's own RetinaNet
# meta-architecture and head (4 stacked convs, its defaults) on the DyHead backbone.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.dyhead_backbone import backbone
from ..common.optim import SGD as optimizer
from ..common.train import train

backbone.dyhead.port = "authors"

model = L(RetinaNet)(
    backbone=backbone,
    head=L(RetinaNetHead)(
        input_shape=[ShapeSpec(channels=256)] * 5,
        num_classes="${..num_classes}",
        conv_dims=[256, 256, 256, 256],
        prior_prob=0.01,
        num_anchors=9,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    anchor_generator=L(DefaultAnchorGenerator)(
        sizes=[[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]],
        aspect_ratios=[0.5, 1.0, 2.0],
        strides=[8, 16, 32, 64, 128],
        offset=0.0,
    ),
    box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
    anchor_matcher=L(Matcher)(
        thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True
    ),
    num_classes=80,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    smooth_l1_beta=0.0,
    box_reg_loss_type="smooth_l1",
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_nms_thresh=0.5,
    max_detections_per_image=100,
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
)

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
optimizer.lr = 0.01
dataloader.train.total_batch_size = 16
