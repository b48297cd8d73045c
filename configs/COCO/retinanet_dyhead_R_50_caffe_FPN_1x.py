# RetinaNet + DyHead, R-50 (MSRA caffe weights), 1x: the authors'
# configs/dyhead_r50_retina_fpn_1x.yaml, 39.9 box AP on COCO val2017. Detectron2's own RetinaNet
# (its common/models/retinanet.py: 4 stacked head convs, 9 anchors, BGR caffe input; its defaults,
# which the authors' config keeps) on the DyHead backbone.
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.detectron2_zoo import detectron2_config
from ..common.models.dyhead_backbone import backbone
from ..common.optim import SGD as optimizer
from ..common.train import train

backbone.dyhead.port = "authors"

model = detectron2_config("common/models/retinanet.py").model
model.backbone = backbone
# The authors' loss and inference settings (Detectron2's defaults), stated so that a key=value
# override can name them.
model.update(
    smooth_l1_beta=0.0,
    box_reg_loss_type="smooth_l1",
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_nms_thresh=0.5,
    max_detections_per_image=100,
)

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
optimizer.lr = 0.01
dataloader.train.total_batch_size = 16
