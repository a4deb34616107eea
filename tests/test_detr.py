"""3-D DETR: box ops, matcher, criterion, network parts, detection metrics (tiny sizes; the detection data, predict
and the CLI: tests/test_detr_cli.py)."""

import itertools

import numpy as np
import pytest
import torch
from nibabel.affines import apply_affine

from medseg.boxes import (
    box_cxcyczwhd_to_xyzxyz,
    box_iou,
    box_xyzxyz_to_cxcyczwhd,
    boxes_voxel_to_world,
    boxes_world_to_voxel,
    generalized_box_iou,
    points_voxel_to_world,
    points_world_to_voxel,
)
from medseg.losses.detr import HungarianMatcher3d, SetCriterion3d
from medseg.metrics.detection import average_precision, froc, mean_average_precision
from medseg.modules.detection import DetectionModule
from medseg.nets.detr import (
    ConvBackbone3d,
    DETR3d,
    ResNetBackbone3d,
    postprocess,
    sine_position_encoding_3d,
)


def lps_affine(degrees: float, spacing=(0.9, 1.2, 2.5), origin=(90.0, 120.0, -60.0)) -> np.ndarray:
    """x and y flipped (LPS storage), anisotropic, rotated by ``degrees`` about z and then x."""
    t = np.deg2rad(degrees)
    about_z = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ about_x @ about_z @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


ROTATED, UNROTATED = lps_affine(7.0), lps_affine(0.0)


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 6] cxcyczwhd inside the unit cube."""
    centre = 0.25 + 0.5 * torch.rand(n, 3, generator=generator)
    size = 0.05 + 0.4 * torch.rand(n, 3, generator=generator)
    return torch.cat([centre, size], 1)


def tiny_detr(n_queries: int = 4, n_classes: int = 1) -> DETR3d:
    backbone = ConvBackbone3d(4, channels=(4, 8), convs_per_stage=1)
    return DETR3d(backbone, n_classes, n_queries, hidden_dim=12, n_heads=2, enc_layers=1, dec_layers=2, ff_dim=16)


# ---------------------------------------------------------------------------------------------- boxes


def test_giou_known_values():
    unit = torch.tensor([[0.0, 0, 0, 1, 1, 1]])
    cases = [
        ([0, 0, 0, 1, 1, 1], 1.0),  # identical
        ([1, 0, 0, 2, 1, 1], 0.0),  # touching faces: IoU 0, hull = union
        ([2, 2, 2, 3, 3, 3], 0.0 - (27 - 2) / 27),  # apart: hull 3^3, union 2
        ([0, 0, 0, 2, 2, 2], 1 / 8),  # nested: IoU 1/8, hull = union
        ([0.5, 0, 0, 1.5, 1, 1], 1 / 3),  # half overlap: inter 1/2, union 3/2, hull = union
    ]
    for other, expected in cases:
        giou = generalized_box_iou(unit, torch.tensor([other], dtype=torch.float32))
        assert giou.item() == pytest.approx(expected, abs=1e-6), other
    a, b = torch.tensor([[0.0, 0, 0, 2, 2, 2]]), torch.tensor([[1.0, 1, 1, 3, 3, 3]])
    assert box_iou(a, b)[0].item() == pytest.approx(1 / 15)
    assert generalized_box_iou(a, b).item() == pytest.approx(1 / 15 - (27 - 15) / 27)
    boxes = box_cxcyczwhd_to_xyzxyz(random_boxes(5, torch.Generator().manual_seed(0)))
    assert torch.allclose(torch.diag(generalized_box_iou(boxes, boxes)), torch.ones(5))


def test_box_formats_round_trip():
    boxes = random_boxes(7, torch.Generator().manual_seed(1))
    assert torch.allclose(box_xyzxyz_to_cxcyczwhd(box_cxcyczwhd_to_xyzxyz(boxes)), boxes, atol=1e-6)


def test_points_and_boxes_voxel_world_round_trip():
    points = np.random.default_rng(0).uniform(-5, 60, (20, 3))
    for affine in (UNROTATED, ROTATED):
        world = points_voxel_to_world(points, affine)
        assert np.allclose(world, apply_affine(affine, points))  # nibabel's reference
        assert np.allclose(points_world_to_voxel(world, affine), points)

    boxes = np.array([[0, 0, 0, 1, 1, 1], [10, 4, 3, 25, 30, 9]], dtype=float)  # voxel edges
    # no rotation (x, y flipped, anisotropic): one voxel is one spacing wide, centred on its world point
    world = boxes_voxel_to_world(boxes, UNROTATED)
    assert np.allclose(world[0, 3:] - world[0, :3], [0.9, 1.2, 2.5])
    assert np.allclose((world[0, :3] + world[0, 3:]) / 2, apply_affine(UNROTATED, [0, 0, 0]))
    # rotated: the world box is the tightest one holding every corner of the voxel box
    world = boxes_voxel_to_world(boxes, ROTATED)
    for box, wbox in zip(boxes, world):
        corners = apply_affine(ROTATED, np.array(list(itertools.product(*zip(box[:3], box[3:])))) - 0.5)
        assert np.allclose(corners.min(0), wbox[:3]) and np.allclose(corners.max(0), wbox[3:])
    # and both ways round-trip, whatever the affine
    for affine in (UNROTATED, ROTATED):
        assert np.allclose(boxes_world_to_voxel(boxes_voxel_to_world(boxes, affine), affine), boxes)
    # a world box no voxel box of the rotated grid has (too thin): the voxel box holding its corners
    thin = np.array([[0.0, 0.0, 0.0, 40.0, 40.0, 0.1]])
    voxel = boxes_world_to_voxel(thin, ROTATED)
    assert (boxes_voxel_to_world(voxel, ROTATED)[0, :3] <= thin[0, :3]).all()


# ---------------------------------------------------------------------------------------------- matcher, criterion


def _cost(logits, pred_boxes, tgt_labels, tgt_boxes, weights=(1.0, 5.0, 2.0)):
    """The matching cost written out element by element, as the reference."""
    prob = logits.softmax(-1)
    q, n = len(pred_boxes), len(tgt_boxes)
    cost = np.zeros((q, n))
    for i, j in itertools.product(range(q), range(n)):
        a = box_cxcyczwhd_to_xyzxyz(pred_boxes[i : i + 1])
        b = box_cxcyczwhd_to_xyzxyz(tgt_boxes[j : j + 1])
        l1 = (pred_boxes[i] - tgt_boxes[j]).abs().sum().item()
        cost[i, j] = (
            -weights[0] * prob[i, tgt_labels[j]].item()
            + weights[1] * l1
            - weights[2] * generalized_box_iou(a, b).item()
        )
    return cost


@pytest.mark.parametrize("seed", range(6))
def test_matcher_is_optimal_against_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n_queries, n_classes, sizes = 5, 3, [3, 0, 5]
    logits = torch.randn(len(sizes), n_queries, n_classes + 1, generator=g)
    pred_boxes = random_boxes(len(sizes) * n_queries, g).view(len(sizes), n_queries, 6)
    targets = [{"labels": torch.randint(0, n_classes, (n,), generator=g), "boxes": random_boxes(n, g)} for n in sizes]
    indices = HungarianMatcher3d()({"pred_logits": logits, "pred_boxes": pred_boxes}, targets)
    for b, (t, (rows, cols)) in enumerate(zip(targets, indices)):
        n = len(t["labels"])
        assert len(rows) == len(cols) == n and sorted(cols.tolist()) == list(range(n))
        cost = _cost(logits[b], pred_boxes[b], t["labels"], t["boxes"])
        best = min(
            (sum(cost[p[j], j] for j in range(n)) for p in itertools.permutations(range(n_queries), n)), default=0
        )
        assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(best, abs=1e-5)


def test_criterion_losses_and_toy_overfit():
    torch.manual_seed(0)
    net = tiny_detr()
    criterion = SetCriterion3d(n_classes=1)
    g = torch.Generator().manual_seed(3)
    images = torch.randn(2, 4, 16, 16, 16, generator=g)
    targets = [{"labels": torch.zeros(2, dtype=torch.int64), "boxes": random_boxes(2, g)},
               {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 6)}]  # fmt: skip
    out = net(images)
    assert out["pred_logits"].shape == (2, 4, 2) and out["pred_boxes"].shape == (2, 4, 6)
    assert len(out["aux_outputs"]) == 1
    losses = criterion(out, targets)
    assert {"loss", "loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_0", "loss_giou_0"} <= set(losses)
    expected = sum(w * (losses[k] + losses[f"{k}_0"]) for k, w in (("loss_ce", 1), ("loss_bbox", 5), ("loss_giou", 2)))
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5)

    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    first = losses["loss"].item()
    for _ in range(40):
        loss = criterion(net(images), targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
    best = postprocess(net(images))[0]
    assert box_iou(best["boxes"][:2], box_cxcyczwhd_to_xyzxyz(targets[0]["boxes"]))[0].max(0).values.min() > 0.3


def test_criterion_on_scans_without_lesions():
    out = {"pred_logits": torch.zeros(2, 4, 2, requires_grad=True), "pred_boxes": torch.rand(2, 4, 6)}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 6)}
    losses = SetCriterion3d()(out, [empty, empty])
    assert losses["loss_bbox"] == 0 and losses["loss_giou"] == 0
    assert losses["loss_ce"].item() == pytest.approx(np.log(2))  # every query should say "no object"
    losses["loss"].backward()
    assert out["pred_logits"].grad[..., -1].lt(0).all()  # pushed towards "no object"


def test_criterion_refuses_mismatched_classes():
    out = tiny_detr(n_classes=2)(torch.randn(1, 4, 16, 16, 16))
    with pytest.raises(ValueError, match="2 classes"):
        SetCriterion3d(n_classes=1)(out, [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 6)}])
    with pytest.raises(ValueError, match="criterion expects 1"):
        DetectionModule(tiny_detr(n_classes=2), SetCriterion3d(n_classes=1))


def test_monai_resnet_backbone_and_reference_points():
    backbone = ResNetBackbone3d(depth=10, in_channels=4, widen_factor=0.125, no_max_pool=True)
    net = DETR3d(
        backbone, n_queries=3, hidden_dim=12, n_heads=2, enc_layers=1, dec_layers=1, ff_dim=16, reference_points=True
    )
    out = net(torch.randn(1, 4, 32, 32, 32))
    assert backbone(torch.randn(1, 4, 32, 32, 32)).shape == (1, backbone.out_channels, 2, 2, 2)
    assert out["pred_logits"].shape == (1, 3, 2) and out["pred_boxes"].shape == (1, 3, 6) and out["aux_outputs"] == []
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()


def test_position_encoding_distinguishes_every_token():
    pos = sine_position_encoding_3d((3, 4, 5), 32)
    assert pos.shape == (60, 32)
    assert torch.cdist(pos, pos).add(torch.eye(60)).min() > 1e-3


# ---------------------------------------------------------------------------------------------- metrics


def test_average_precision_and_froc_hand_made():
    truth = [np.array([[0, 0, 0, 10, 10, 10], [20, 20, 20, 30, 30, 30]]), np.zeros((0, 6))]
    perfect = [truth[0], np.zeros((0, 6))]
    assert average_precision(perfect, [[0.9, 0.8], []], truth, 0.5) == 1.0
    assert froc(perfect, [[0.9, 0.8], []], truth)[0] == 1.0
    assert average_precision([np.zeros((0, 6))] * 2, [[], []], truth, 0.5) == 0.0

    # scan 0: hit lesion 1 (0.9), duplicate of it (0.8), miss (0.7), hit lesion 2 (0.6); scan 1: miss (0.95)
    preds = [np.array([[0, 0, 0, 10, 10, 10], [1, 1, 1, 10, 10, 10],
                       [50, 50, 50, 60, 60, 60], [20, 20, 20, 29, 30, 30]]),
             np.array([[40, 40, 40, 45, 45, 45]])]  # fmt: skip
    scores = [np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.95])]
    # ranked: FP, TP, FP (duplicate), FP, TP -> precision 0, 1/2, 1/3, 1/4, 2/5 at recall 0, .5, .5, .5, 1
    assert average_precision(preds, scores, truth, 0.5) == pytest.approx(0.5 * 0.5 + 0.5 * 0.4)
    score, sensitivity = froc(preds, scores, truth, iou_threshold=0.1)
    # FROC ignores the duplicate: FPs per scan 0.5 (0.95), 0.5 -> lesion 1, 1.0 (0.7), 1.0 -> lesion 2
    assert sensitivity == {0.125: 0.0, 0.25: 0.0, 0.5: 0.5, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0, 8.0: 1.0}
    assert score == pytest.approx(4.5 / 7)
    # classes: a right box of the wrong class is a miss
    labels = [np.array([1, 1, 1, 1]), np.array([1])]
    true_labels = [np.array([0, 0]), np.zeros(0)]
    assert mean_average_precision(preds, scores, labels, truth, true_labels, 0.5) == 0.0
    assert mean_average_precision(preds, scores, [np.zeros(4), np.zeros(1)], truth, true_labels, 0.5) == pytest.approx(
        0.45
    )
