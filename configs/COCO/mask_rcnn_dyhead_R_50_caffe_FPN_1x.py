# Mask R-CNN + DyHead, R-50 (MSRA caffe weights), 1x: the authors' Faster R-CNN + DyHead recipe
# (their configs/dyhead_r50_rcnn_fpn_1x.yaml: backbone, DyHead, optimizer, schedule, nothing
# frozen) with Detectron2's standard mask head (4 convs, 28x28 class-specific masks), trained on
# COCO instances with their polygons. Detectron2's GeneralizedRCNN with the DyHead backbone on
# P2-P6, BGR caffe input. configs/COCO/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py is this without
# the mask branch.
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.rcnn_dyhead import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.dyhead.port = "authors"

dataloader.train.mapper.use_instance_mask = True  # COCO's polygons (Detectron2's mask_format)

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
optimizer.lr = 0.02
dataloader.train.total_batch_size = 16
