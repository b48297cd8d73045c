# FCOS + DyHead, R-50 (MSRA caffe weights), 1x. Detectron2's own FCOS (its
# common/models/fcos.py: 4 stacked GroupNorm head convs, centre sampling radius 1.5, score
# sqrt(class x centerness) above 0.2, NMS 0.6, BGR caffe input) on the DyHead backbone (P3-P7,
# strides 8-128, the names FCOS reads), with the authors' R-50 1x recipe (MSRA weights, no stage
# frozen, SGD lr 0.01, 16 images, 90k iterations). The paper publishes no FCOS + DyHead model.
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.detectron2_zoo import detectron2_config
from ..common.models.dyhead_backbone import backbone
from ..common.optim import SGD as optimizer
from ..common.train import train

backbone.dyhead.port = "authors"
backbone.size_divisibility = 128  # P7's stride, as the authors

model = detectron2_config("common/models/fcos.py").model
model.backbone = backbone
# Detectron2's defaults, stated so that a key=value override can name them.
model.update(
    center_sampling_radius=1.5,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    test_score_thresh=0.2,
    test_topk_candidates=1000,
    test_nms_thresh=0.6,
    max_detections_per_image=100,
)

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
optimizer.lr = 0.01
dataloader.train.total_batch_size = 16
