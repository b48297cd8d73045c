"""Which of this project's configs reproduces a released checkpoint, told apart by its keys.

``tools/convert_checkpoint.py`` converts a file onto :func:`default_config`'s config unless told
another; the names are :mod:`dyhead_d2.model_zoo`'s (``get_config_file`` finds the file).
"""

from __future__ import annotations

from .mmdet import DCN_BIAS_OVERRIDE, has_dcn_bias

__all__ = ["CONFIGS", "dcn_bias_overrides", "default_config"]

# The config that reproduces each released checkpoint, told apart by its keys.
CONFIGS = {
    "authors_atss": "COCO/atss_dyhead_R_50_caffe_FPN_1x.py",
    "authors_retinanet": "COCO/retinanet_dyhead_R_50_caffe_FPN_1x.py",
    "authors_faster_rcnn": "COCO/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py",
    "authors_swin_t": "COCO/atss_dyhead_swin_T_FPN_2x_ms.py",
    "mmdet_simple": "COCO/atss_dyhead_R_50_FPN_1x.py",
    "mmdet_repro": "COCO/atss_dyhead_R_50_caffe_FPN_1x_mmdet.py",
    "mmdet_swin_l": "COCO/atss_dyhead_swin_L_FPN_2x_ms.py",
}


def default_config(source: str, state_dict: dict) -> str:
    """The config of the released model a checkpoint of ``source`` looks like."""
    keys = state_dict.keys()
    if source == "authors":
        if any(k.startswith("roi_heads.") for k in keys):
            return CONFIGS["authors_faster_rcnn"]
        if any(k.startswith("head.cls_subnet.") for k in keys):
            return CONFIGS["authors_retinanet"]
        if any(".bottom_up.patch_embed." in k for k in keys):
            return CONFIGS["authors_swin_t"]
        return CONFIGS["authors_atss"]
    if any(k.startswith("backbone.patch_embed.") for k in keys):
        return CONFIGS["mmdet_swin_l"]
    # The simple setting predicts with 3x3 convolutions, the reproduction with 1x1.
    cls = state_dict.get("bbox_head.atss_cls.weight")
    if cls is not None and tuple(cls.shape[-2:]) == (3, 3):
        return CONFIGS["mmdet_simple"]
    return CONFIGS["mmdet_repro"]


def dcn_bias_overrides(source: str, state_dict: dict, opts: list[str]) -> list[str]:
    """``opts`` plus the override that gives DyHead's DCNs a bias when an MMDetection file has
    them (the files of MMDetection's DyHead pull-request branch may), unless ``opts`` sets it."""
    if source != "mmdet" or not has_dcn_bias(state_dict):
        return list(opts)
    if any(o.split("=", 1)[0] == "model.backbone.dyhead.dcn_bias" for o in opts):
        return list(opts)
    return [*opts, DCN_BIAS_OVERRIDE]
