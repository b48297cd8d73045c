# ATSS + DyHead, Swin-L (ImageNet-22k, 384), 2x, multi-scale 480-1200: MMDetection's
# configs/dyhead/atss_swin-l-p4-w12_fpn_dyhead_ms-2x_coco.py, 56.2 box AP on COCO val2017.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import SwinTransformer

from ..common.coco_schedule import epoch_schedule
from ..common.data.coco import dataloader
from ..common.data.inputs import use_imagenet_rgb_input
from ..common.models.atss_dyhead import model
from ..common.models.dyhead_backbone import mmdet_top_block
from ..common.optim import AdamW as optimizer
from ..common.train import train

model.backbone.fpn.bottom_up = L(SwinTransformer)(
    pretrain_img_size=384,
    embed_dim=192,
    depths=(2, 2, 18, 2),
    num_heads=(6, 12, 24, 48),
    window_size=12,
    mlp_ratio=4.0,
    drop_path_rate=0.2,
    ape=False,
    patch_norm=True,
    out_indices=(1, 2, 3),
)
model.backbone.fpn.in_features = ["p1", "p2", "p3"]
model.backbone.fpn.top_block = mmdet_top_block()  # P6/P7 on P5, no ReLU before P7
# MMDetection's DyHead as its released weights were trained (see dyhead_d2/layers/ports.py).
model.backbone.dyhead.port = "mmdet_repro"
model.test_topk_by = "prob"
# MMDetection clips decoded boxes to the image and drops empty ones before NMS.
model.test_clip_before_nms = True
use_imagenet_rgb_input(model, dataloader)

# Shortest edge uniform in [480, 1200], longest at most 2000; test at 1200 / 2000.
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(480, 1200), max_size=2000, sample_style="range"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 16
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=1200, max_size=2000)
]

# AdamW 5e-5, weight decay 0.05 except norms and Swin's position tables.
optimizer.lr = 5e-5
optimizer.weight_decay = 0.05
optimizer.params.weight_decay_norm = 0.0
optimizer.params.overrides = {
    "absolute_pos_embed": {"weight_decay": 0.0},
    "relative_position_bias_table": {"weight_decay": 0.0},
}
# 24 epochs (the 1x schedule over the dataset repeated twice), x0.1 after epochs 16 and 22, 500
# warm-up iterations.
MAX_ITER, lr_multiplier = epoch_schedule(24, (16, 22))

train.init_checkpoint = (
    "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
    "swin_large_patch4_window12_384_22k.pth"
)
train.max_iter = MAX_ITER
