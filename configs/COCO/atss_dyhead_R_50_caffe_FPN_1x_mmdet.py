# ATSS + DyHead, R-50 (MSRA caffe weights), 1x: MMDetection's "reproduction" setting,
# 42.5 box AP on COCO val2017 (configs/dyhead/atss_r50-caffe_fpn_dyhead_1x_coco.py there), i.e.
# the model its released atss_r50_fpn_dyhead_for_reproduction_4x4_1x_coco weights run.
from ..common.coco_schedule import epoch_schedule
from ..common.data.coco import dataloader
from ..common.models.atss_dyhead import model
from ..common.models.dyhead_backbone import mmdet_top_block
from ..common.optim import SGD as optimizer
from ..common.train import train

# The common backbone is already MMDetection's here: caffe-style ResNet whose BN is frozen
# entirely (requires_grad=False, norm_eval=True: Detectron2's FrozenBN), images padded to 128;
# but MMDetection freezes stem + res2 (frozen_stages=1), the authors nothing.
model.backbone.fpn.bottom_up.freeze_at = 2
model.backbone.fpn.top_block = mmdet_top_block()  # P6/P7 on P5, no ReLU before P7
# MMDetection's DyHead as its released weights were trained (see dyhead_d2/layers/ports.py).
model.backbone.dyhead.port = "mmdet_repro"
# Head: 1x1 predictors and anchor offset 0.5, as the authors (the common model's values).
model.test_topk_by = "prob"
# MMDetection clips decoded boxes to the image and drops empty ones before NMS.
model.test_clip_before_nms = True

dataloader.train.total_batch_size = 16  # 4 GPUs x 4 images

# 12 epochs, x0.1 after epochs 8 and 11, 500 warm-up iterations.
MAX_ITER, lr_multiplier = epoch_schedule(12, (8, 11))
optimizer.lr = 0.01

# open-mmlab://detectron2/resnet50_caffe is Detectron2's MSRA R-50 converted to MMDetection.
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = MAX_ITER
