"""ATSS (Adaptive Training Sample Selection) as a Detectron2 meta-architecture.

The tensor math (assignment, targets, losses, candidate selection) lives in :mod:`dyhead_d2.atss`
and does not depend on detectron2; this module wires it into Detectron2's :class:`DenseDetector`,
anchors, box coding and NMS, in the style of Detectron2's own FCOS and RetinaNet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from ..atss import (
    atss_assign,
    atss_losses,
    box_centers,
    centerness_targets,
    select_topk_candidates,
)
from ..layers.finite import all_finite, describe_non_finite
from .nms import class_aware_nms

__all__ = ["ATSS", "check_finite_images"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class ATSS(DenseDetector):
    """ATSS detector (:paper:`ATSS`) with a centerness branch, as used by DyHead.

    The head returns, per level, class logits (N, K, H, W), box deltas (N, 4, H, W) and centerness
    logits (N, 1, H, W) for one anchor per location.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: list[str] | None = None,
        anchor_generator: DefaultAnchorGenerator,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        anchor_topk: int = 9,
        assigner: Callable[..., Tensor] = atss_assign,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        box_reg_loss_weight: float = 2.0,
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_topk_by: str = "score",
        test_nms_thresh: float = 0.6,
        test_clip_before_nms: bool = False,
        max_detections_per_image: int = 100,
        pixel_mean: list[float],
        pixel_std: list[float],
        input_format: str = "BGR",
    ):
        """
        Args:
            backbone, head, head_in_features, pixel_mean, pixel_std: as in :class:`DenseDetector`.
            anchor_generator: one anchor per location (ATSS uses a single square anchor).
            box2box_transform: box coding of the deltas, e.g. ``Box2BoxTransform((10, 10, 5, 5))``.
            num_classes: number of foreground classes.
            anchor_topk: candidates per level and ground truth in the ATSS assignment.
            assigner: the assignment, ``(anchors (R, 4), anchors per level, gt boxes (G, 4),
                topk=) -> (R,)`` matched ground-truth index or -1; default
                :func:`~dyhead_d2.atss.atss_assign` (a reference implementation can be swapped in).
            focal_loss_alpha, focal_loss_gamma: sigmoid focal loss parameters.
            box_reg_loss_weight: weight of the GIoU loss.
            test_score_thresh: class probability threshold (applied before centerness).
            test_topk_candidates: candidates kept per level before NMS.
            test_topk_by: rank those candidates by "score" (probability x centerness, the authors'
                Detectron2 port) or by "prob" (class probability alone, MMDetection).
            test_nms_thresh: IoU threshold of the class-aware NMS.
            test_clip_before_nms: clip the decoded boxes to the (resized, unpadded) image and drop
                those left with zero width or height before NMS, as MMDetection's ATSS head does
                (``max_shape`` in its box decoding, ``min_bbox_size=0``). False: boxes enter NMS
                unclipped and are clipped only afterwards by Detectron2's postprocessing, as in
                the authors' port.
            max_detections_per_image: detections kept per image after NMS.
            input_format: "BGR" or "RGB", for visualisation.
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        if test_topk_by not in ("score", "prob"):
            raise ValueError(f"ATSS: unknown test_topk_by {test_topk_by!r}; use 'score' or 'prob'")
        if any(n != 1 for n in anchor_generator.num_anchors):
            raise ValueError(
                "ATSS expects one anchor per location; the anchor generator has "
                f"{anchor_generator.num_anchors} per level"
            )
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.anchor_topk = anchor_topk
        self.assigner = assigner
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.box_reg_loss_weight = box_reg_loss_weight
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_topk_by = test_topk_by
        self.test_nms_thresh = test_nms_thresh
        self.test_clip_before_nms = test_clip_before_nms
        self.max_detections_per_image = max_detections_per_image
        self.input_format = input_format

    def preprocess_image(self, batched_inputs: list[dict[str, Tensor]]) -> ImageList:
        """Normalise, pad and batch the images, after :func:`check_finite_images`."""
        check_finite_images(batched_inputs)
        return super().preprocess_image(batched_inputs)

    def forward_training(
        self,
        images: ImageList,
        features: list[Tensor],
        predictions: list[list[Tensor]],
        gt_instances: list[Instances],
    ) -> dict[str, Tensor]:
        pred_logits, pred_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        gt_labels, matched_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(
            anchors, pred_logits, gt_labels, pred_deltas, matched_boxes, pred_centerness
        )

    @torch.no_grad()
    def label_anchors(
        self, anchors: list[Boxes], gt_instances: list[Instances]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """ATSS assignment per image.

        Returns:
            gt_labels: per image (R,) int64, the class of each anchor or ``num_classes`` for
                background.
            matched_boxes: per image (R, 4), the matched ground-truth box (anything for background).
        """
        num_per_level = [len(a) for a in anchors]
        all_anchors = Boxes.cat(anchors).tensor
        gt_labels, matched_boxes = [], []
        for inst in gt_instances:
            gt_boxes = inst.gt_boxes.tensor
            matched = self.assigner(all_anchors, num_per_level, gt_boxes, topk=self.anchor_topk)
            if len(inst) > 0:
                labels = inst.gt_classes[matched.clamp(min=0)]
                boxes = gt_boxes[matched.clamp(min=0)]
            else:
                labels = torch.zeros_like(matched)
                boxes = torch.zeros_like(all_anchors)
            labels = torch.where(matched >= 0, labels, torch.full_like(labels, self.num_classes))
            gt_labels.append(labels)
            matched_boxes.append(boxes)
        return gt_labels, matched_boxes

    def losses(
        self,
        anchors: list[Boxes],
        pred_logits: list[Tensor],
        gt_labels: list[Tensor],
        pred_deltas: list[Tensor],
        matched_boxes: list[Tensor],
        pred_centerness: list[Tensor],
    ) -> dict[str, Tensor]:
        """Focal, GIoU and centerness losses; see :func:`dyhead_d2.atss.atss_losses`."""
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = labels != self.num_classes
        all_anchors = Boxes.cat(anchors).tensor  # (R, 4)
        anchors_pos = all_anchors.unsqueeze(0).expand(num_images, -1, -1)[pos_mask]
        target_boxes = torch.stack(matched_boxes)[pos_mask]
        pred_boxes = self.box2box_transform.apply_deltas(
            cat(pred_deltas, dim=1)[pos_mask], anchors_pos
        )
        ctr_targets = centerness_targets(box_centers(anchors_pos), target_boxes)
        ctr_logits = cat(pred_centerness, dim=1).squeeze(2)[pos_mask]
        self._log_num_positives(pos_mask.sum().item() / num_images)
        return atss_losses(
            cat(pred_logits, dim=1),
            labels,
            pred_boxes,
            target_boxes,
            ctr_logits,
            ctr_targets,
            num_classes=self.num_classes,
            focal_alpha=self.focal_loss_alpha,
            focal_gamma=self.focal_loss_gamma,
            box_loss_weight=self.box_reg_loss_weight,
        )

    @staticmethod
    def _log_num_positives(value: float) -> None:
        # Outside a trainer (e.g. a user calling the model in training mode) there is no storage.
        try:
            storage = get_event_storage()
        except AssertionError:
            return
        storage.put_scalar("num_pos_anchors", value)

    def forward_inference(
        self, images: ImageList, features: list[Tensor], predictions: list[list[Tensor]]
    ) -> list[Instances]:
        pred_logits, pred_deltas, pred_centerness = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        results = []
        for i, image_size in enumerate(images.image_sizes):
            results.append(
                self.inference_single_image(
                    anchors,
                    [x[i] for x in pred_logits],
                    [x[i] for x in pred_deltas],
                    [x[i] for x in pred_centerness],
                    image_size,
                )
            )
        return results

    def inference_single_image(
        self,
        anchors: list[Boxes],
        logits: list[Tensor],
        deltas: list[Tensor],
        centerness: list[Tensor],
        image_size: tuple[int, int],
    ) -> Instances:
        """Per level: threshold, top-k, decode (and, with ``test_clip_before_nms``, clip to
        ``image_size`` and drop empty boxes); then class-aware NMS over all levels.

        ``logits``, ``deltas``, ``centerness``: per level (R_l, K), (R_l, 4), (R_l, 1) of one image.
        """
        boxes_all, scores_all, classes_all = [], [], []
        for anchors_l, logits_l, deltas_l, ctr_l in zip(anchors, logits, deltas, centerness):
            scores, anchor_idxs, class_idxs = select_topk_candidates(
                logits_l.sigmoid(),
                ctr_l.squeeze(1).sigmoid(),
                self.test_score_thresh,
                self.test_topk_candidates,
                topk_by=self.test_topk_by,
            )
            boxes = self.box2box_transform.apply_deltas(
                deltas_l[anchor_idxs], anchors_l.tensor[anchor_idxs]
            )
            if self.test_clip_before_nms:
                clipped = Boxes(boxes)
                clipped.clip(image_size)
                keep = clipped.nonempty(threshold=0.0)
                boxes, scores, class_idxs = clipped.tensor[keep], scores[keep], class_idxs[keep]
            boxes_all.append(boxes)
            scores_all.append(scores)
            classes_all.append(class_idxs)
        boxes, scores, classes = cat(boxes_all), cat(scores_all), cat(classes_all)
        keep = class_aware_nms(boxes, scores, classes, self.test_nms_thresh, self.num_classes)
        keep = keep[: self.max_detections_per_image]
        return Instances(
            image_size,
            pred_boxes=Boxes(boxes[keep]),
            scores=scores[keep],
            pred_classes=classes[keep],
        )


def check_finite_images(batched_inputs: list[dict[str, Tensor]]) -> None:
    """Raise a ValueError naming the first input whose ``"image"`` holds NaN or Inf.

    Integer images (what Detectron2's data loaders produce) are always finite and cost nothing;
    floating-point images cost one reduction each and one host read for the batch.
    """
    images = [x["image"] for x in batched_inputs if x["image"].is_floating_point()]
    if not images or all_finite(images):
        return
    for i, x in enumerate(batched_inputs):
        image = x["image"]
        if image.is_floating_point() and not bool(torch.isfinite(image).all()):
            name = f" ({x['file_name']})" if "file_name" in x else ""
            raise ValueError(
                f"input {i}{name}: its 'image' tensor {tuple(image.shape)} holds "
                f"{describe_non_finite(image)}; the model needs finite pixel values"
            )
