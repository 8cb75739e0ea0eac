"""The detector: SimOTA and the YOLOX loss on hand-made cases with known answers; shapes; metrics."""

from __future__ import annotations

import math

import pytest
import torch

from ferbench.attention import attention_factory
from ferbench.errors import ConfigError
from ferbench.models import create_model
from ferbench.models.yoloxnano_det import grid_priors, postprocess
from ferbench.training.detection.metrics import as_target_dicts, face_confusion, matched_counts, recall_precision_f1
from ferbench.training.detection.simota import LossOptions, matching_class_cost, simota, yolox_loss

# One level, stride 8, a 32 px image: 4 x 4 cells, cell i at column i % 4, row i // 4, centre (8c + 4, 8r + 4).
PRIORS = grid_priors([(4, 4)], (8,), torch.device("cpu"))
A = [0.0, 0.0, 16.0, 16.0]  # class 0; cells 0, 1, 4, 5 have their centres inside
B = [8.0, 8.0, 24.0, 24.0]  # class 1; cells 5, 6, 9, 10 inside
FAR = [30.0, 30.0, 31.0, 31.0]  # a 1 px box overlapping neither


def outputs(pred_boxes: dict[int, list[float]], num_classes: int = 2) -> torch.Tensor:
    """(1, 16, 5 + C): every cell predicts FAR unless given; all logits 0 (probability 0.5)."""
    rows = []
    for i in range(16):
        x1, y1, x2, y2 = pred_boxes.get(i, FAR)
        rows.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1] + [0.0] * (1 + num_classes))
    return torch.tensor([rows])


def targets(*boxes: tuple[int, list[float]]) -> torch.Tensor:
    return torch.tensor([[[float(c), *b] for c, b in boxes]])


YOLOX = LossOptions()


def assign(out: torch.Tensor, tgt: torch.Tensor, options: LossOptions = YOLOX):
    from torchvision.ops import box_convert

    boxes = box_convert(out[0, :, :4], "cxcywh", "xyxy")
    return simota(boxes, out[0, :, 4], out[0, :, 5:], tgt[0, :, 1:], tgt[0, :, 0].long(), PRIORS, options)


def test_simota_gives_each_box_the_cell_that_predicts_it() -> None:
    # A's IoUs: cell 0 -> 1, cell 5 -> 64/448; their sum 1.14 -> k = 1: only cell 0. Likewise B -> cell 5.
    a = assign(outputs({0: A, 5: B}), targets((0, A), (1, B)))
    assert a.foreground.nonzero().squeeze(1).tolist() == [0, 5]
    assert a.gt_index.tolist() == [0, 1]
    assert a.iou.tolist() == pytest.approx([1.0, 1.0])


def test_simota_dynamic_k_and_a_shared_cell_goes_to_the_cheaper_box() -> None:
    # Cells 0 and 5 both predict A exactly: A's top IoUs sum to 2 -> k = 2, it takes both. B's best IoU is
    # 64/448 -> k = 1; its cheapest candidate is cell 5 (cell 0's centre lies outside B: +1e5). Cell 5 is then
    # claimed twice; A's cost there (-log 1 = 0) beats B's (3 x -log 0.143 = 5.8): A keeps it, B gets nothing.
    a = assign(outputs({0: A, 5: A}), targets((0, A), (1, B)))
    assert a.foreground.nonzero().squeeze(1).tolist() == [0, 5]
    assert a.gt_index.tolist() == [0, 0]


def test_a_narrower_centre_square_keeps_the_corner_cell_out() -> None:
    # WHOLE covers the image, centre (16, 16); cells 0, 5 and 6 predict it exactly (k = 3), the rest nothing.
    # Radius 2.5 strides (20 px) reaches every cell: the three exact ones win. Radius 1 (8 px) reaches only the
    # middle cells 5, 6, 9, 10: corner cell 0 falls outside the cheap square, and middle cell 9 takes its place.
    whole = [0.0, 0.0, 32.0, 32.0]
    out, tgt = outputs({0: whole, 5: whole, 6: whole}), targets((0, whole))

    def picked(radius: float) -> list[int]:
        return assign(out, tgt, LossOptions(center_radius=radius)).foreground.nonzero().squeeze(1).tolist()

    assert picked(2.5) == [0, 5, 6]
    assert 0 not in picked(1.0) and {5, 6} <= set(picked(1.0))


def test_without_the_class_cost_a_confused_class_no_longer_punishes_confidence() -> None:
    # Two candidates, true class 0 of 3; every class at probability 0.5 (a confused expression). With YOLOX's cost the
    # more confident cell (objectness 0.9) is dearer than the doubtful one (0.2): the wrong class's term grows
    # faster than the right one's falls. With the objectness part alone, the confident cell is the cheaper.
    obj = torch.logit(torch.tensor([0.9, 0.2]))
    cls = torch.zeros(2, 3)
    gt_cls = torch.tensor([0])
    with_class = matching_class_cost(obj, cls, gt_cls, with_class=True)[0]
    without = matching_class_cost(obj, cls, gt_cls, with_class=False)[0]
    assert with_class[0] > with_class[1]
    assert without[0] < without[1] and without.tolist() == pytest.approx([-0.5 * math.log(0.9), -0.5 * math.log(0.2)])


def test_simota_with_no_candidate_cell_assigns_nothing() -> None:
    a = assign(outputs({}), targets((0, [100.0, 100.0, 110.0, 110.0])))
    assert not a.foreground.any() and len(a.gt_index) == 0


def test_yolox_loss_known_answer() -> None:
    # Two foreground cells with exact boxes: box loss 0. Objectness: 16 cells x BCE(logit 0) = 16 log 2, over
    # 2 foreground cells = 8 log 2. Classes: 2 cells x 2 classes x log 2 / 2 = 2 log 2. Total 10 log 2.
    loss = yolox_loss(outputs({0: A, 5: B}), targets((0, A), (1, B)), PRIORS)
    assert loss.foreground == 2
    assert loss.box.item() == pytest.approx(0.0, abs=1e-6)
    assert loss.obj.item() == pytest.approx(8 * math.log(2), rel=1e-5)
    assert loss.cls.item() == pytest.approx(2 * math.log(2), rel=1e-5)
    assert loss.total.item() == pytest.approx(10 * math.log(2), rel=1e-5)


def test_yolox_loss_box_term_and_padding() -> None:
    # Cell 0 predicts [0, 0, 16, 8] for A (IoU 1/2): box loss 5 x (1 - 1/4) per foreground cell. A padding
    # row (class -1) must not count as a box.
    out = outputs({0: [0.0, 0.0, 16.0, 8.0]})
    tgt = torch.cat([targets((0, A)), torch.tensor([[[-1.0, 0, 0, 0, 0]]])], dim=1)
    loss = yolox_loss(out, tgt, PRIORS)
    assert loss.foreground == 1
    assert loss.box.item() == pytest.approx(0.75, rel=1e-5)


def test_class_targets_scale_by_iou_unless_told_not_to() -> None:
    # One foreground cell (cell 0 for A) predicting half of A (IoU 1/2), class logits (2, -2): YOLOX's class
    # target is (1/2, 0), the one-hot target (1, 0).
    out = outputs({0: [0.0, 0.0, 16.0, 8.0]})
    out[0, :, 5:] = torch.tensor([2.0, -2.0])
    tgt = targets((0, A))
    soft, hard = (yolox_loss(out, tgt, PRIORS, LossOptions(iou_class_targets=f)).cls.item() for f in (True, False))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    logits = torch.tensor([2.0, -2.0])
    assert soft == pytest.approx(bce(logits, torch.tensor([0.5, 0.0]), reduction="sum").item(), rel=1e-5)
    assert hard == pytest.approx(bce(logits, torch.tensor([1.0, 0.0]), reduction="sum").item(), rel=1e-5)


def test_image_without_boxes_has_only_objectness_loss() -> None:
    loss = yolox_loss(outputs({}), torch.full((1, 1, 5), -1.0), PRIORS)
    assert loss.foreground == 0 and loss.cls.item() == 0 and loss.obj.item() == pytest.approx(16 * math.log(2))


@pytest.mark.parametrize("attn", ["none", "cbam", "se"])
def test_detector_shapes_and_attention_on_three_outputs(attn: str) -> None:
    model = create_model("yoloxnano_det", num_classes=7, in_chans=3, attn_layer=attention_factory(attn))
    out = model(torch.randn(2, 3, 64, 64))
    n_cells = 8 * 8 + 4 * 4 + 2 * 2
    assert out.shape == (2, n_cells, 5 + 7)
    assert len(model.priors(64, out.device)) == n_cells
    if attn != "none":
        assert all(not isinstance(a, torch.nn.Identity) for a in model.attn)
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    loss = yolox_loss(out, targets((3, [8.0, 8.0, 40.0, 48.0])).expand(2, -1, -1), model.priors(64, out.device))
    loss.total.backward()
    assert all(p.grad is not None for p in model.heads.parameters())


def test_postprocess_scores_nms_and_metrics() -> None:
    out = outputs({0: A, 1: A, 5: B})
    out[0, [0, 1, 5], 4] = 5.0  # objectness ~0.99
    out[0, 0, 5] = out[0, 1, 5] = 5.0  # class 0 for the A boxes (cells 0, 1: duplicates, NMS keeps one)
    out[0, 5, 6] = 5.0  # class 1 for B
    (pred,) = postprocess(out, score_threshold=0.3)
    assert sorted(pred["labels"].tolist()) == [0, 1]
    truth = as_target_dicts(targets((0, A), (1, B)))
    counts = matched_counts([pred], truth, 2)
    assert counts.tolist() == [[1, 1, 1], [1, 1, 1]]
    assert recall_precision_f1(counts) == {"recall": 1.0, "precision": 1.0, "f1": 1.0}
    # a wrong class: detections of class 1 on A's box count for neither class
    wrong = {**pred, "labels": torch.ones_like(pred["labels"])}
    scores = recall_precision_f1(matched_counts([wrong], truth, 2))
    assert scores["recall"] == pytest.approx(0.5) and scores["precision"] == pytest.approx(0.5 * (0 + 0.5))
    matrix, missed = face_confusion([wrong], truth, 2)
    assert matrix.tolist() == [[0, 1], [0, 0]] and missed == 0


def test_detector_norm_gn_swaps_every_batchnorm_and_keeps_the_parameters():
    bn = create_model("yoloxnano_det", num_classes=7, in_chans=3)
    gn = create_model("yoloxnano_det", num_classes=7, in_chans=3, norm="gn")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gn.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in gn.modules()) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()
    )
    assert sum(p.numel() for p in gn.parameters()) == sum(p.numel() for p in bn.parameters())
    assert gn(torch.randn(1, 3, 64, 64)).shape == bn(torch.randn(1, 3, 64, 64)).shape
    for form in ("yoloxnano_det", "yoloxnano"):  # one check for both forms
        with pytest.raises(ConfigError, match="model.norm must be one of bn, gn, got 'ln'"):
            create_model(form, num_classes=7, in_chans=3, norm="ln")
