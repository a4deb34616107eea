"""DETR's set loss in 3-D: Hungarian matching of predictions to objects, then class, L1 and GIoU losses.

Targets, one dict per image: ``boxes`` [N, 6] (cx, cy, cz, w, h, d) normalised to [0, 1] of the input,
``labels`` [N] int64 in [0, K). N may be 0. Predictions: the dict :class:`medseg.nets.detr.DETR3d` returns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from medseg.boxes import box_cxcyczwhd_to_xyzxyz, generalized_box_iou


class HungarianMatcher3d(nn.Module):
    """Optimal one-to-one assignment of predictions to objects (DETR's ``models/matcher.py`` in 3-D).

    The cost of giving query i object j is
    ``cost_class * -p_i(class_j) + cost_bbox * |box_i - box_j|_1 + cost_giou * -GIoU(box_i, box_j)``;
    ``scipy.optimize.linear_sum_assignment`` minimises its sum. Queries left over predict "no object".
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("the matcher needs a non-zero cost_class, cost_bbox or cost_giou")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """A list of B pairs (query indices, object indices), each of length min(Q, N_b)."""
        bs, n_queries = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)  # [B*Q, K+1]
        pred_boxes = outputs["pred_boxes"].flatten(0, 1)  # [B*Q, 6]
        tgt_ids = torch.cat([t["labels"] for t in targets])  # [sum N]
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(pred_boxes)  # [sum N, 6]

        cost_class = -prob[:, tgt_ids]  # [B*Q, sum N]
        cost_bbox = torch.cdist(pred_boxes, tgt_boxes, p=1)  # [B*Q, sum N]
        cost_giou = -generalized_box_iou(box_cxcyczwhd_to_xyzxyz(pred_boxes), box_cxcyczwhd_to_xyzxyz(tgt_boxes))
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = cost.view(bs, n_queries, len(tgt_ids)).cpu()  # [B, Q, sum N]

        sizes = [len(t["boxes"]) for t in targets]
        indices = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]


class SetCriterion3d(nn.Module):
    """DETR's loss: match, then cross-entropy on every query and L1 + GIoU on the matched boxes.

    The "no object" class is weighted ``eos_coef`` in the cross-entropy; box losses are averaged over the
    objects of the batch. With ``aux_loss`` every earlier decoder layer is matched and scored too, its
    parts named ``loss_ce_0``, ``loss_bbox_0``, ... (0 = first layer).

    Returns a dict: ``loss`` (the weighted sum that is optimised), ``loss_ce``, ``loss_bbox``,
    ``loss_giou`` (last layer, unweighted), the auxiliary parts, and ``cardinality_error`` (mean
    |predicted objects - true objects| per image; logged, not optimised).
    """

    def __init__(
        self,
        n_classes: int = 1,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        weight_ce: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        eos_coef: float = 0.1,
        aux_loss: bool = True,
    ) -> None:
        """
        Args:
            n_classes: object classes K, without "no object"; must match the network's.
            cost_class, cost_bbox, cost_giou: matching cost weights (DETR: 1, 5, 2).
            weight_ce, weight_bbox, weight_giou: loss weights (DETR: 1, 5, 2).
            eos_coef: relative weight of the "no object" class in the cross-entropy (DETR: 0.1).
            aux_loss: also score the predictions of the earlier decoder layers.
        """
        super().__init__()
        self.n_classes, self.eos_coef, self.aux_loss = n_classes, eos_coef, aux_loss
        self.matcher = HungarianMatcher3d(cost_class, cost_bbox, cost_giou)
        self.weights = {"loss_ce": weight_ce, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        empty_weight = torch.ones(n_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """outputs: ``pred_logits`` [B, Q, K+1], ``pred_boxes`` [B, Q, 6] (+ ``aux_outputs``); targets: B dicts."""
        n_logits = outputs["pred_logits"].shape[-1]
        if n_logits != self.n_classes + 1:
            raise ValueError(
                f"the network predicts {n_logits - 1} classes but the criterion has n_classes={self.n_classes}"
            )
        for t in targets:
            if len(t["labels"]) and int(t["labels"].max()) >= self.n_classes:
                raise ValueError(f"target label {int(t['labels'].max())} is outside the {self.n_classes} classes")
        n_boxes = max(sum(len(t["labels"]) for t in targets), 1)  # DETR normalises by the batch's objects
        losses = self._layer_losses(outputs, targets, n_boxes)
        losses["cardinality_error"] = self._cardinality_error(outputs["pred_logits"], targets)
        total = sum(self.weights[k] * losses[k] for k in self.weights)
        if self.aux_loss:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                parts = self._layer_losses(aux, targets, n_boxes)
                total = total + sum(self.weights[k] * parts[k] for k in self.weights)
                losses.update({f"{k}_{i}": v for k, v in parts.items()})
        return {"loss": total, **losses}

    def _layer_losses(self, outputs: dict, targets: list[dict], n_boxes: int) -> dict[str, Tensor]:
        logits, pred_boxes = outputs["pred_logits"], outputs["pred_boxes"]  # [B, Q, K+1], [B, Q, 6]
        indices = self.matcher(outputs, targets)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])  # [M]
        query_idx = torch.cat([src for src, _ in indices])  # [M]

        target_classes = torch.full(logits.shape[:2], self.n_classes, dtype=torch.int64, device=logits.device)  # [B, Q]
        target_classes[batch_idx, query_idx] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(
            logits.device
        )
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)

        matched = pred_boxes[batch_idx, query_idx]  # [M, 6]
        target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(matched)  # [M, 6]
        loss_bbox = F.l1_loss(matched, target_boxes, reduction="none").sum() / n_boxes
        giou = generalized_box_iou(box_cxcyczwhd_to_xyzxyz(matched), box_cxcyczwhd_to_xyzxyz(target_boxes))  # [M, M]
        loss_giou = (1 - torch.diag(giou)).sum() / n_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    @torch.no_grad()
    def _cardinality_error(self, logits: Tensor, targets: list[dict]) -> Tensor:
        predicted = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()  # [B]
        true = torch.as_tensor([float(len(t["labels"])) for t in targets], device=logits.device)  # [B]
        return F.l1_loss(predicted, true)
