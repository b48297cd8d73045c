# Faster R-CNN + DyHead, R-50 (MSRA caffe weights), 1x: the authors'
# configs/dyhead_r50_rcnn_fpn_1x.yaml, 40.3 box AP on COCO val2017. Detectron2's GeneralizedRCNN
# with the DyHead backbone on P2-P6: the Mask R-CNN + DyHead config of the same recipe without
# the mask branch, BGR caffe input.
from ..common.models.rcnn_dyhead import without_mask_branch
from .mask_rcnn_dyhead_R_50_caffe_FPN_1x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

without_mask_branch(model, dataloader)
