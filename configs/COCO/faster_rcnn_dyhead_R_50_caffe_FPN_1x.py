# Faster R-CNN + DyHead, R-50 (MSRA caffe weights), 1x: the authors'
# configs/dyhead_r50_rcnn_fpn_1x.yaml, 40.3 box AP on COCO val2017. Detectron2's GeneralizedRCNN
# with the DyHead backbone on P2-P6: its common/models/mask_rcnn_fpn.py without the mask branch
# (as its keypoint_rcnn_fpn.py removes it), BGR caffe input.
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.detectron2_zoo import detectron2_config
from ..common.models.dyhead_backbone import backbone
from ..common.optim import SGD as optimizer
from ..common.train import train

# FPN on res2-res5 with a max-pooled P6, DyHead on P2-P6 (images padded to 64, the largest stride).
backbone.fpn.bottom_up.out_features = ["res2", "res3", "res4", "res5"]
backbone.fpn.in_features = ["res2", "res3", "res4", "res5"]
backbone.fpn.top_block = L(LastLevelMaxPool)()
backbone.dyhead.port = "authors"

model = detectron2_config("common/models/mask_rcnn_fpn.py").model
for key in ("mask_in_features", "mask_pooler", "mask_head"):
    model.roi_heads.pop(key)
model.backbone = backbone

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
optimizer.lr = 0.02
dataloader.train.total_batch_size = 16
