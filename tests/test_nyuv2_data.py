"""The NYUv2 loader on generated data: format, masks, determinism, sharding, augmentation, bad data."""

import shutil

import numpy as np
import pytest
import torch

from gradnorm.config import ConfigError
from gradnorm.data import NYUv2
from gradnorm.data.fake_nyuv2 import write_fake_nyuv2
from gradnorm.data.nyuv2 import Augmentation

H, W = 16, 24


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_fake_nyuv2(tmp_path_factory.mktemp("nyuv2"), n_train=8, n_val=5, height=H, width=W, seed=0)


def _data(root, **kwargs):
    kwargs.setdefault("num_workers", 0)
    return NYUv2(str(root), **kwargs)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _same(a, b):
    (xa, ya), (xb, yb) = a, b
    return torch.equal(xa, xb) and ya.keys() == yb.keys() and all(torch.equal(ya[k], yb[k]) for k in ya)


def test_fake_files_have_the_documented_format(root):
    for split, n in (("train", 8), ("val", 5)):
        for i in range(n):
            image, label, depth, normal = (np.load(root / split / k / f"{i}.npy") for k in
                                           ("image", "label", "depth", "normal"))
            assert image.shape == (H, W, 3) and 0 <= image.min() and image.max() <= 1
            assert label.shape == (H, W) and set(np.unique(label)) <= set(range(-1, 13)) and (label == -1).any()
            assert depth.shape == (H, W, 1) and depth.min() == 0 and depth.max() < 10
            norms = np.linalg.norm(normal, axis=-1)
            assert normal.shape == (H, W, 3) and np.all((norms == 0) | (np.abs(norms - 1) < 1e-5)) and (norms == 0).any()


def test_batches_have_the_documented_shapes_dtypes_and_masks(root):
    data = _data(root, augmentation=False, image_normalization="none")
    assert data.task_names == ["seg", "depth", "normals"] and data.image_size == (H, W)
    x, y = next(data.train_batches(batch_size=2, seed=0))
    assert x.shape == (2, 3, H, W) and x.dtype == torch.float32
    assert y["seg"].shape == (2, H, W) and y["seg"].dtype == torch.int64
    assert y["depth"].shape == (2, 1, H, W) and y["normals"].shape == (2, 3, H, W)
    # test batches are the files, in order, with HxWxC moved to CxHxW
    x, y = next(data.test_batches(batch_size=3))
    assert torch.equal(x[1], torch.from_numpy(np.load(root / "val/image/1.npy")).permute(2, 0, 1))
    assert torch.equal(y["seg"][1], torch.from_numpy(np.load(root / "val/label/1.npy")).long())
    assert torch.equal(y["normals"][2], torch.from_numpy(np.load(root / "val/normal/2.npy")).permute(2, 0, 1))
    assert (y["seg"] == -1).any() and (y["depth"] == 0).any()


def test_imagenet_normalisation(root):
    raw = next(_data(root, image_normalization="none").test_batches(1))[0]
    normalised = next(_data(root).test_batches(1))[0]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(normalised, (raw - mean) / std)


def test_training_batches_are_a_function_of_seed_and_step(root):
    data = _data(root)
    first = _take(data.train_batches(2, seed=3), 6)  # 6 steps: two epochs of 4 batches... and more
    again = _take(data.train_batches(2, seed=3), 6)
    resumed = _take(data.train_batches(2, seed=3, start_step=4), 2)
    other = next(data.train_batches(2, seed=4))
    assert all(_same(a, b) for a, b in zip(first, again))
    assert all(_same(a, b) for a, b in zip(first[4:], resumed))
    assert not _same(first[0], other)


def test_ranks_split_the_global_batch_including_its_augmentation(root):
    data = _data(root)
    whole = _take(data.train_batches(4, seed=1), 3)
    rank0 = _take(data.train_batches(2, seed=1, rank=0, world_size=2), 3)
    rank1 = _take(data.train_batches(2, seed=1, rank=1, world_size=2), 3)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, rank0, rank1):
        assert torch.equal(x, torch.cat([x0, x1]))
        assert all(torch.equal(y[k], torch.cat([y0[k], y1[k]])) for k in y)


def test_test_set_is_split_over_ranks_without_repeats(root):
    data = _data(root)
    seen = []
    for rank in range(2):
        seen += [x for x, _ in data.test_batches(2, rank=rank, world_size=2)]
    seen = torch.cat(seen)
    everything = torch.cat([x for x, _ in data.test_batches(5)])
    assert len(seen) == 5
    assert sorted(seen.sum((1, 2, 3)).tolist()) == sorted(everything.sum((1, 2, 3)).tolist())


def test_worker_processes_give_the_same_batches(root):
    serial = _take(_data(root).train_batches(2, seed=0), 3)
    parallel = _take(_data(root, num_workers=2).train_batches(2, seed=0), 3)
    assert all(_same(a, b) for a, b in zip(serial, parallel))


def test_selected_tasks_only_load_their_targets(root):
    data = _data(root)
    data.select_tasks(["depth"])
    _, y = next(data.train_batches(2, seed=0))
    assert list(y) == ["depth"]


def test_batch_larger_than_the_training_set_is_a_config_error(root):
    with pytest.raises(ConfigError, match="batch_size=5 on 2"):
        _data(root).train_batches(5, seed=0, world_size=2)


# -- augmentation ---------------------------------------------------------------------------------
def _coordinate_sample():
    """Every kind encodes the source column, so a consistent transform keeps them in agreement."""
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                                indexing="ij")
    return {
        "image": torch.stack([rows, cols, torch.zeros(H, W)]),
        "label": (cols // 4) % 13,
        "depth": (1 + cols)[None],
        "normal": torch.stack([torch.full((H, W), 0.6), torch.full((H, W), 0.8), torch.zeros(H, W)]),
    }


def test_flip_mirrors_every_kind_and_negates_normal_x():
    sample = _coordinate_sample()
    out = Augmentation(scales=[1.0], flip_prob=1.0)(sample, seed=0)
    for kind in ("image", "label", "depth"):
        assert torch.equal(out[kind], sample[kind].flip(-1))
    assert torch.equal(out["normal"][0], -sample["normal"][0].flip(-1))
    assert torch.equal(out["normal"][1:], sample["normal"][1:].flip(-1))


@pytest.mark.parametrize("seed", range(6))
def test_scale_crop_and_flip_are_the_same_for_every_kind(seed):
    scale = 2.0
    out = Augmentation(scales=[scale], flip_prob=0.5)(_coordinate_sample(), seed=seed)
    # depth was 1 + source column, then divided by the zoom: recover the column of each pixel
    source_col = out["depth"][0] * scale - 1
    assert torch.allclose(source_col, source_col.round(), atol=1e-4)
    source_col = source_col.round()
    assert torch.equal(out["label"], (source_col // 4) % 13)  # labels sampled where depth was
    # the image (bilinear) follows the same columns up to interpolation
    assert (out["image"][1] - source_col).abs().max() <= 1.0
    flipped = bool(source_col[0, 0] > source_col[0, -1])
    assert torch.allclose(out["normal"][0], torch.full((H, W), -0.6 if flipped else 0.6))
    assert source_col.max() - source_col.min() <= W / scale  # a zoom by 2 shows half the width


def test_augmentation_depends_only_on_its_seed():
    augment = Augmentation(scales=[1.0, 1.2, 1.5], flip_prob=0.5)
    outs = [augment(_coordinate_sample(), seed=s)["depth"] for s in (7, 7, 8, 9, 10)]
    assert torch.equal(outs[0], outs[1])
    assert any(not torch.equal(outs[0], o) for o in outs[2:])


# -- bad data -------------------------------------------------------------------------------------
def test_missing_root_names_the_path_and_how_to_get_the_data(tmp_path):
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'nope'} is not a directory.*download_nyuv2\.py"):
        NYUv2(str(tmp_path / "nope"))


@pytest.fixture
def copy(root, tmp_path):
    return shutil.copytree(root, tmp_path / "copy")


def test_missing_kind_folder(copy):
    shutil.rmtree(copy / "val" / "normal")
    with pytest.raises(ConfigError, match=r"val/normal is missing"):
        NYUv2(str(copy))


def test_missing_file(copy):
    (copy / "train" / "depth" / "3.npy").unlink()
    with pytest.raises(ConfigError, match=r"train/depth is malformed: 3.npy is missing"):
        NYUv2(str(copy))


def test_unequal_counts(copy):
    (copy / "train" / "depth" / "7.npy").unlink()
    with pytest.raises(ConfigError, match=r"train holds .*'depth': 7.*expected the same"):
        NYUv2(str(copy))


def test_truncated_file_is_named(copy):
    path = copy / "train" / "image" / "2.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=rf"corrupt NYUv2 file {path}: .*truncated"):
        NYUv2(str(copy))


def test_garbage_file_is_named(copy):
    path = copy / "val" / "label" / "0.npy"
    path.write_bytes(b"not a numpy file")
    with pytest.raises(ConfigError, match=rf"corrupt NYUv2 file {path}: not a readable .npy"):
        NYUv2(str(copy))


def test_wrong_shape_is_named(copy):
    path = copy / "train" / "depth" / "1.npy"
    np.save(path, np.ones((H, W), dtype=np.float32))
    with pytest.raises(ConfigError, match=rf"corrupt NYUv2 file {path}: shape \({H}, {W}\), expected \({H}, {W}, 1\)"):
        NYUv2(str(copy))


def test_labels_out_of_range_are_named_when_read(copy):
    path = copy / "val" / "label" / "0.npy"
    np.save(path, np.full((H, W), 20.0, dtype=np.float32))
    data = NYUv2(str(copy), num_workers=0)
    with pytest.raises(ValueError, match=rf"corrupt NYUv2 file {path}: labels must be integers"):
        next(data.test_batches(2))
