"""The silhouette IoU loss against hand-computed values."""

import pytest
import torch

from recon.losses import silhouette_iou, silhouette_iou_loss


def test_soft_iou_matches_hand_computation():
    rendered = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]])
    reference = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # intersection 1·1 + 0.5·1 = 1.5; union (1+1−1) + (0.5+1−0.5) + 0 + 0.25 = 2.25
    expected = 1.5 / (2.25 + 1e-6)
    assert silhouette_iou(rendered, reference).item() == pytest.approx(expected, rel=1e-6)
    assert silhouette_iou_loss(rendered, reference).item() == pytest.approx(1 - expected, rel=1e-6)


def test_binary_masks_give_the_usual_iou_and_the_loss_averages_images():
    a = torch.zeros(3, 4, 4)
    b = torch.zeros(3, 4, 4)
    a[0, :2], b[0, :2] = 1, 1  # identical: IoU 1
    a[1, :2], b[1, 2:] = 1, 1  # disjoint: IoU 0
    a[2, :2], b[2, 1:3] = 1, 1  # rows {0,1} vs {1,2}: 4 / 12
    iou = silhouette_iou(a, b)
    torch.testing.assert_close(iou, torch.tensor([1.0, 0.0, 1 / 3]), atol=1e-6, rtol=0)
    assert silhouette_iou_loss(a, b).item() == pytest.approx(1 - (1 + 0 + 1 / 3) / 3, abs=1e-6)


def test_two_empty_silhouettes_give_zero_iou_without_nan():
    empty = torch.zeros(2, 8, 8)
    assert torch.equal(silhouette_iou(empty, empty), torch.zeros(2))


def test_gradient_matches_finite_differences_in_float64():
    torch.manual_seed(0)
    rendered = torch.rand(2, 5, 5, dtype=torch.float64, requires_grad=True)
    reference = (torch.rand(2, 5, 5, dtype=torch.float64) > 0.5).double()
    assert torch.autograd.gradcheck(lambda r: silhouette_iou_loss(r, reference), (rendered,))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="differ"):
        silhouette_iou(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
