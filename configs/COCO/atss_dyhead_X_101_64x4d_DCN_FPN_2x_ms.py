# ATSS + DyHead, ResNeXt-101 64x4d with deformable convolutions, 2x multi-scale: the paper's
# headline model, 54.0 box AP on COCO test-dev (with multi-scale testing; no config or weights
# were released). atss_dyhead_X_101_64x4d_FPN_2x_ms.py with every 3x3 convolution of res3-res5
# deformable: DCNv2 (modulated), one offset group, offsets and mask from a zero-initialised 3x3
# convolution, Detectron2's DeformBottleneckBlock (dyhead_d2.modeling.DeformBottleneckBlock: the
# same parameters, on torchvision's deformable convolution, no custom build). The paper does not
# give the DCN's stages or version; ATSS's dcnv2 X-101 config, its baseline, has modulated DCN in
# res4-res5 only (deform_on_per_stage=[False, False, True, True]).
from .atss_dyhead_X_101_64x4d_FPN_2x_ms import dataloader, lr_multiplier, model, optimizer, train

model.backbone.fpn.bottom_up.stages.update(
    deform_on_per_stage=[False, True, True, True],
    deform_modulated=True,
    deform_num_groups=1,
)
