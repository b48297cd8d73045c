"""ATSS (Adaptive Training Sample Selection) as a Detectron2 meta-architecture.

The tensor math (assignment, targets, losses, candidate selection) lives in :mod:`dyhead_d2.atss`
and does not depend on detectron2; this module wires it into Detectron2's :class:`DenseDetector`,
anchors, box coding and structures, in the style of Detectron2's own FCOS and RetinaNet.

On an accelerator a training step reads back to the host once: the losses are computed by
masking (no data-dependent shape), and the number of positive anchors (for the event storage)
is read together with the DyHead blocks' finite check. Inference reads once per image before
NMS (the candidates of every level are selected with fixed sizes, then compacted once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from ..atss import atss_assign, atss_losses, centerness_targets, select_topk_candidates
from ..layers.dyhead import DyHead
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

    def forward(self, batched_inputs: list[dict[str, Tensor]]):
        """Detectron2's :meth:`DenseDetector.forward`; the DyHead towers of the backbone leave
        their finite check to :meth:`forward_training` / :meth:`forward_inference`, which read
        it with their own values (one host read instead of two)."""
        with _deferred_finite_checks(self.backbone):
            return super().forward(batched_inputs)

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
        losses = self.losses(
            anchors, pred_logits, gt_labels, pred_deltas, matched_boxes, pred_centerness
        )
        num_pos = (torch.stack(gt_labels) != self.num_classes).sum()
        (num_pos,) = self._read_with_finite_checks([num_pos])  # the step's one host read
        self._log_num_positives(num_pos / len(gt_labels))
        return losses

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
        """Focal, GIoU and centerness losses; see :func:`dyhead_d2.atss.atss_losses`.

        Every anchor's box is decoded and its centerness target computed; background anchors
        are matched to themselves (a well-formed box, so their masked-out terms stay finite).
        Detectron2's ``_dense_box_regression_loss`` (FCOS's) gathers the positives with a
        boolean mask, a host read, and cannot weight by centerness, so it is not used.
        """
        labels = torch.stack(gt_labels)  # (N, R)
        num_images, num_anchors = labels.shape
        all_anchors = Boxes.cat(anchors)
        anchor_boxes = all_anchors.tensor.expand(num_images, -1, -1)
        positive = (labels != self.num_classes).unsqueeze(2)
        target_boxes = torch.where(positive, torch.stack(matched_boxes), anchor_boxes)
        pred_boxes = self.box2box_transform.apply_deltas(
            cat(pred_deltas, dim=1).reshape(-1, 4), anchor_boxes.reshape(-1, 4)
        )
        centers = all_anchors.get_centers().repeat(num_images, 1)
        # Not FCOS's compute_ctrness_targets: it reads distances from Box2BoxTransformLinear's
        # deltas (ATSS codes boxes with Box2BoxTransform) and gives NaN for degenerate boxes.
        ctr_targets = centerness_targets(centers, target_boxes.reshape(-1, 4))
        return atss_losses(
            cat(pred_logits, dim=1),
            labels,
            pred_boxes.view(num_images, num_anchors, 4),
            target_boxes,
            cat(pred_centerness, dim=1).squeeze(2),
            ctr_targets.view(num_images, num_anchors),
            num_classes=self.num_classes,
            focal_alpha=self.focal_loss_alpha,
            focal_gamma=self.focal_loss_gamma,
            box_loss_weight=self.box_reg_loss_weight,
        )

    def _read_with_finite_checks(self, values: list[Tensor]) -> list[int]:
        """``values`` (int64 scalars on the device) read in one host read together with the
        finite checks of the backbone's DyHead towers, which raise here if they failed."""
        towers = [m for m in self.backbone.modules() if isinstance(m, DyHead)]
        pending = [(m, m.pending_check()) for m in towers]
        pending = [(m, c) for m, c in pending if c is not None]
        if not values and not pending:
            return []
        flat = torch.cat([v.reshape(1) for v in values] + [c for _, c in pending]).tolist()
        start = len(values)
        for tower, check in pending:
            tower.raise_if_non_finite(flat[start : start + len(check)])
            start += len(check)
        return flat[: len(values)]

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
        if not torch.jit.is_tracing():
            self._read_with_finite_checks([])
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
        """:meth:`decode_candidates`, the candidates kept (the image's one host read before
        NMS), then class-aware NMS over all levels and the ``max_detections_per_image`` best.

        ``logits``, ``deltas``, ``centerness``: per level (R_l, K), (R_l, 4), (R_l, 1) of one image.
        """
        boxes, scores, classes, valid = self.decode_candidates(
            anchors, logits, deltas, centerness, image_size
        )
        keep = torch.nonzero(valid).squeeze(1)
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        keep = class_aware_nms(boxes, scores, classes, self.test_nms_thresh, self.num_classes)
        keep = keep[: self.max_detections_per_image]
        return Instances(
            image_size,
            pred_boxes=Boxes(boxes[keep]),
            scores=scores[keep],
            pred_classes=classes[keep],
        )

    def decode_candidates(
        self,
        anchors: list[Boxes],
        logits: list[Tensor],
        deltas: list[Tensor],
        centerness: list[Tensor],
        image_size: tuple[int, int],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per level, the ``test_topk_candidates`` best (anchor, class) pairs of one image
        (:func:`~dyhead_d2.atss.select_topk_candidates`: class probability above
        ``test_score_thresh``, ranked by ``test_topk_by``) and their decoded boxes; with
        ``test_clip_before_nms`` the boxes are clipped to ``image_size`` and those left empty
        are no longer candidates. Sizes depend only on the input shapes: no host read.

        Returns:
            ``(boxes (T, 4), scores (T,), classes (T,), valid (T,))`` of all levels, fine to
            coarse, each level best first; float32 boxes and scores (also under autocast).
            The rows with ``valid`` are the candidates.
        """
        # Not Detectron2's _decode_multi_level_predictions: ATSS thresholds on the probability
        # but ranks by probability x centerness, and keeps fixed sizes until the end.
        boxes_all, scores_all, classes_all, valid_all = [], [], [], []
        for anchors_l, logits_l, deltas_l, ctr_l in zip(anchors, logits, deltas, centerness):
            scores, anchor_idxs, class_idxs, valid = select_topk_candidates(
                _full_precision(logits_l).sigmoid(),
                _full_precision(ctr_l).squeeze(1).sigmoid(),
                self.test_score_thresh,
                self.test_topk_candidates,
                topk_by=self.test_topk_by,
            )
            boxes = self.box2box_transform.apply_deltas(
                deltas_l[anchor_idxs], anchors_l.tensor[anchor_idxs]
            )
            if self.test_clip_before_nms:
                # Boxes.clip's clamps without its finiteness assert (a host read per level).
                h, w = image_size
                x0, y0, x1, y1 = boxes.unbind(dim=1)
                boxes = torch.stack(
                    [x0.clamp(0, w), y0.clamp(0, h), x1.clamp(0, w), y1.clamp(0, h)], dim=1
                )
                valid = valid & Boxes(boxes).nonempty(threshold=0.0)
            boxes_all.append(boxes)
            scores_all.append(scores)
            classes_all.append(class_idxs)
            valid_all.append(valid)
        return cat(boxes_all), cat(scores_all), cat(classes_all), cat(valid_all)


def _full_precision(t: Tensor) -> Tensor:
    """float32 for float16 / bfloat16 (e.g. autocast's head outputs), else ``t``: probabilities,
    scores and their ranking are computed in float32 in every precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


@contextmanager
def _deferred_finite_checks(backbone: nn.Module) -> Iterator[None]:
    """The backbone's DyHead towers record their finite checks without reading them."""
    towers = [m for m in backbone.modules() if isinstance(m, DyHead)]
    saved = [m.check_in_forward for m in towers]
    for m in towers:
        m.check_in_forward = False
    try:
        yield
    finally:
        for m, value in zip(towers, saved):
            m.check_in_forward = value


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
