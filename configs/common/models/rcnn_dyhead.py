# Detectron2's Mask R-CNN (its common/models/mask_rcnn_fpn.py) with the DyHead backbone: FPN on
# res2-res5 with a max-pooled P6, DyHead on P2-P6 (images padded to 64, the largest stride). The
# RPN, box and mask heads are Detectron2's, unchanged. Faster R-CNN is the same model without the
# mask branch (as Detectron2's keypoint_rcnn_fpn.py removes it). The DyHead port is left '???'.
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ..detectron2_zoo import detectron2_config
from .dyhead_backbone import backbone

MASK_BRANCH = ("mask_in_features", "mask_pooler", "mask_head")

backbone.fpn.bottom_up.out_features = ["res2", "res3", "res4", "res5"]
backbone.fpn.in_features = ["res2", "res3", "res4", "res5"]
backbone.fpn.top_block = L(LastLevelMaxPool)()

model = detectron2_config("common/models/mask_rcnn_fpn.py").model
model.backbone = backbone


def without_mask_branch(model, dataloader):
    """Faster R-CNN: the model without the mask branch, the train loader without masks."""
    for key in MASK_BRANCH:
        model.roi_heads.pop(key)
    dataloader.train.mapper.use_instance_mask = False
