"""VoxelIoU against a hand computation, and its exactness when states from several processes are merged."""

import math

import pytest
import torch

from recon.metrics import VoxelIoU, voxel_iou


def _grid(filled: list[tuple[int, int, int]], size: int = 4) -> torch.Tensor:
    grid = torch.zeros(size, size, size, dtype=torch.bool)
    for index in filled:
        grid[index] = True
    return grid


def test_per_item_iou_is_intersection_over_union():
    target = _grid([(0, 0, 0), (0, 0, 1), (1, 1, 1)])
    predicted = _grid([(0, 0, 0), (2, 2, 2)])
    # intersection 1, union 4
    assert voxel_iou(predicted[None], target[None]).item() == pytest.approx(0.25)
    assert voxel_iou(target[None], target[None]).item() == 1.0
    assert voxel_iou(_grid([])[None], _grid([])[None]).item() == 1.0


def test_category_means_and_unweighted_mean_by_hand():
    target = _grid([(0, 0, 0), (0, 0, 1)])  # 2 voxels
    full, half, none = target, _grid([(0, 0, 0)]), _grid([(3, 3, 3)])
    metric = VoxelIoU(num_categories=3)
    # category 0: IoU 1 and 0.5 -> 0.75; category 2: IoU 0 (disjoint: 0/3) three times -> 0; category 1: absent
    metric.update(torch.stack([full, half]), torch.stack([target, target]), torch.tensor([0, 0]))
    metric.update(torch.stack([none] * 3), torch.stack([target] * 3), torch.tensor([2, 2, 2]))
    result = metric.compute()
    assert result["iou"][0].item() == pytest.approx(0.75)
    assert math.isnan(result["iou"][1].item())
    assert result["iou"][2].item() == pytest.approx(0.0)
    # unweighted over the two present categories, not over the five items (which would give 0.3)
    assert result["miou"].item() == pytest.approx(0.375)


def test_merged_shards_equal_one_process():
    torch.manual_seed(0)
    predicted = torch.rand(10, 6, 6, 6) > 0.5
    target = torch.rand(10, 6, 6, 6) > 0.4
    category = torch.tensor([0, 1, 1, 0, 2, 2, 2, 1, 0, 0])
    whole = VoxelIoU(3)
    whole.update(predicted, target, category)
    first, second = VoxelIoU(3), VoxelIoU(3)
    first.update(predicted[:3], target[:3], category[:3])
    second.update(predicted[3:], target[3:], category[3:])
    first.merge_state(second)  # what the "sum" reduction does across DDP ranks
    expected, merged = whole.compute(), first.compute()
    torch.testing.assert_close(merged["iou"], expected["iou"])
    torch.testing.assert_close(merged["miou"], expected["miou"])
    by_hand = torch.stack([voxel_iou(predicted, target)[category == c].mean() for c in range(3)])
    torch.testing.assert_close(expected["iou"], by_hand)


def test_out_of_range_category_is_a_clear_error():
    metric = VoxelIoU(2)
    grid = _grid([(0, 0, 0)])[None]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        metric.update(grid, grid, torch.tensor([2]))
