# ATSS + DyHead, R-50 (torchvision weights, pytorch style), 1x: MMDetection's "simple" setting,
# 43.3 box AP on COCO val2017 (configs/dyhead/atss_r50_fpn_dyhead_1x_coco.py there).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from dyhead_d2.data.cv2_resize import ResizeShortestEdgeCV2
from dyhead_d2.layers import FrozenStatsBatchNorm2d

from ..common.coco_schedule import epoch_schedule
from ..common.data.coco import dataloader
from ..common.data.inputs import use_imagenet_rgb_input
from ..common.models.atss_dyhead import model
from ..common.models.dyhead_backbone import mmdet_top_block
from ..common.optim import SGD as optimizer
from ..common.train import train

# torchvision-style ResNet: stride in the 3x3 conv, BatchNorm with frozen statistics and a
# trainable affine (MMDetection's norm_eval=True); stem + res2 frozen (frozen_stages=1).
model.backbone.fpn.bottom_up = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm=FrozenStatsBatchNorm2d),
    stages=L(ResNet.make_default_stages)(
        depth=50, stride_in_1x1=False, norm=FrozenStatsBatchNorm2d
    ),
    out_features=["res3", "res4", "res5"],
    freeze_at=2,
)
model.backbone.fpn.top_block = mmdet_top_block()  # P6/P7 on P5, no ReLU before P7
model.backbone.size_divisibility = 32  # no padding to 128 in this setting
# MMDetection's DyHead as its released weights were trained (see dyhead_d2/layers/ports.py).
model.backbone.dyhead.port = "mmdet_simple"
model.head.pred_kernel_size = 3
model.anchor_generator.offset = 0.0
model.test_topk_by = "prob"
# MMDetection clips decoded boxes to the image and drops empty ones before NMS.
model.test_clip_before_nms = True
use_imagenet_rgb_input(model, dataloader)

# This setting names no resize backend, so mmcv's default applies: OpenCV's bilinear (Detectron2
# resizes with Pillow, which antialiases when it shrinks). Same sizes: 800 / 1333.
dataloader.train.mapper.augmentations = [
    L(ResizeShortestEdgeCV2)(short_edge_length=(800,), max_size=1333, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.mapper.augmentations = [
    L(ResizeShortestEdgeCV2)(short_edge_length=800, max_size=1333)
]
dataloader.train.total_batch_size = 16  # 4 GPUs x 4 images

# 12 epochs, x0.1 after epochs 8 and 11, 500 warm-up iterations.
MAX_ITER, lr_multiplier = epoch_schedule(12, (8, 11))
optimizer.lr = 0.01

# torchvision's ImageNet ResNet-50 (IMAGENET1K_V1), converted to Detectron2's layout on loading.
train.init_checkpoint = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
train.max_iter = MAX_ITER
