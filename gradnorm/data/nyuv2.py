"""NYUv2 with 13-class segmentation, depth and surface normals (docs/paper.md §5, Table 1).

Reads the preprocessed release of the MTAN project (Liu et al. 2019): 795 training and 654 test
images at 288×384, one ``.npy`` file per sample and kind::

    root/{train,val}/image/<i>.npy    H×W×3 float, RGB in [0, 1]
    root/{train,val}/label/<i>.npy    H×W, class ids 0..12, -1 = no label (any numeric dtype)
    root/{train,val}/depth/<i>.npy    H×W×1 float, metres, 0 = no measurement
    root/{train,val}/normal/<i>.npy   H×W×3 float, unit normals in [-1, 1], channel 0 = the image's
                                      horizontal axis, (0, 0, 0) = no normal

``val`` is the test set (the paper's 654 test images). Files are opened memory-mapped and read by
DataLoader workers. Every training batch is a pure function of (seed, step): the samples come from
:func:`gradnorm.data.base.step_indices` and each sample's augmentation from its own seed, derived
from (seed, step, position in the global batch), so results do not depend on ``num_workers`` or on
how the global batch is split over processes.

Augmentation (training only, ``augmentation: true``), as in the public NYUv2 multitask code (MTAN):
a random zoom s ∈ ``scales`` (crop H/s × W/s at a random place, resize back to H×W: image and
normals bilinearly, labels and depth by nearest neighbour, depth divided by s, since zooming in by s
brings the scene s times closer), then a horizontal flip with probability ``flip_prob`` (the x
component of the normals changes sign).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from gradnorm.checks import ConfigError, first_line
from gradnorm.data.base import MultiTaskData, step_indices
from gradnorm.tasks import Depth, Normals, Segmentation, Task

SPLITS = {"train": "train", "test": "val"}
#: file kind -> the trailing shape of its arrays after H×W (() for labels)
KINDS = {"image": (3,), "label": (), "depth": (1,), "normal": (3,)}
#: task name -> the file kind holding its targets
TASK_KINDS = {"seg": "label", "depth": "depth", "normals": "normal"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOW_TO_GET = ("get it with `python scripts/download_nyuv2.py --out DIR` and set dataset.root=DIR, "
              "or generate a fake one with `python scripts/make_fake_nyuv2.py DIR` (docs/nyuv2.md)")



#: The single-task (STL) values on NYUv2 (SegNet-MTAN, 288×384) that the CAGrad and Nash-MTL code use
#: as the base of Δm ("base results from CAGrad": Liu et al. 2021; Navon et al. 2022, their
#: ``experiments/nyuv2/utils.py``), over the nine metrics of their tables. Our metric names.
NASH_MTL_BASELINES = {
    "seg/miou": 0.3830, "seg/pix_acc": 0.6376,
    "depth/abs_err": 0.6754, "depth/rel_err": 0.2780,
    "normals/mean_angle": 25.01, "normals/median_angle": 19.21,
    "normals/within_11.25": 0.3014, "normals/within_22.5": 0.5720, "normals/within_30": 0.6915,
}

class NYUv2(MultiTaskData):
    """The three NYUv2 tasks of Table 1: ``seg`` (13 classes), ``depth`` and ``normals``.

    Args:
        root: the folder holding ``train/`` and ``val/``.
        augmentation: random zoom and horizontal flip of training samples.
        scales: the zoom factors drawn uniformly (MTAN: 1.0, 1.2, 1.5).
        flip_prob: probability of a horizontal flip.
        image_normalization: ``imagenet`` (subtract ImageNet's mean, divide by its std, as
            torchvision's pretrained weights expect) or ``none`` (RGB in [0, 1]).
        depth_loss: ``l2`` (the paper's squared loss) or ``l1``.
        num_classes: segmentation classes (13).
        median_bin_deg: histogram bin of the normals' median angle (degrees).
        metric_average: ``pixels`` (every metric over all valid test pixels) or ``batches`` (depth and
            normals metrics per test batch, then the mean over batches, as the MTAN / CAGrad / Nash-MTL
            code; segmentation from the test set's confusion matrix either way; docs/nyuv2.md §3).
        single_task_baselines: metric name -> single-task value, e.g. ``{depth/rmse: 0.6}``, or
            ``"nash_mtl"`` for :data:`NASH_MTL_BASELINES`; when given, evaluations report ``delta_m``,
            ``delta_m_nash_mtl`` and ``delta_m_libmtl`` (``gradnorm.tasks.DELTA_M_CONVENTIONS``).
        num_workers, pin_memory, persistent_workers, prefetch_factor: DataLoader settings;
            ``auto`` pins memory and keeps workers alive when CUDA is available.
    """

    def __init__(
        self,
        root: str = "data/nyuv2",
        augmentation: bool = True,
        scales: Sequence[float] = (1.0, 1.2, 1.5),
        flip_prob: float = 0.5,
        image_normalization: str = "imagenet",
        depth_loss: str = "l2",
        num_classes: int = 13,
        median_bin_deg: float = 0.01,
        metric_average: str = "pixels",
        single_task_baselines: dict | None = None,
        num_workers: int = 4,
        pin_memory: bool | str = "auto",
        persistent_workers: bool | str = "auto",
        prefetch_factor: int = 2,
    ):
        self.root = Path(os.path.expanduser(str(root)))
        self.splits = {name: SplitFiles.scan(self.root, folder) for name, folder in SPLITS.items()}
        shapes = {split.image_size for split in self.splits.values()}
        if len(shapes) != 1:
            raise ConfigError(f"NYUv2 data at {self.root} is malformed: train and val image sizes differ {shapes}")
        self.image_size = shapes.pop()
        scales = [float(s) for s in scales]
        if not scales or any(not s >= 1.0 for s in scales):
            raise ValueError(f"dataset.scales must be a non-empty list of zoom factors >= 1, got {scales}")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"dataset.flip_prob must be in [0, 1], got {flip_prob!r}")
        if image_normalization not in ("imagenet", "none"):
            raise ValueError(f"dataset.image_normalization must be imagenet or none, got {image_normalization!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"dataset.num_workers must be a non-negative integer, got {num_workers!r}")
        self.augmentation = Augmentation(scales, float(flip_prob)) if augmentation else None
        self.image_normalization = image_normalization
        self.num_classes = num_classes
        self.tasks: list[Task] = [
            Segmentation("seg", num_classes=num_classes),
            Depth("depth", loss=depth_loss, metric_average=metric_average),
            Normals("normals", median_bin_deg=median_bin_deg, metric_average=metric_average),
        ]
        if single_task_baselines == "nash_mtl":
            single_task_baselines = NASH_MTL_BASELINES
        self.set_single_task_baselines(single_task_baselines)
        cuda = torch.cuda.is_available()
        self.loader_kwargs = dict(
            num_workers=num_workers,
            pin_memory=cuda if pin_memory == "auto" else bool(pin_memory),
            persistent_workers=num_workers > 0 and (cuda if persistent_workers == "auto" else bool(persistent_workers)),
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
        )
        self._test_loaders: dict[tuple, DataLoader] = {}

    def model_kwargs(self) -> dict:
        return {"in_channels": 3}

    def task_setup(self) -> dict:
        """Image size and split sizes, recorded in summary.json (a report's protocol tags read them)."""
        return {"image_size": list(self.image_size), "train_samples": len(self.splits["train"]),
                "test_samples": len(self.splits["test"])}

    def dataset(self, split: str, augment: bool) -> NYUv2Samples:
        """The samples of ``split`` ("train" or "test") with the selected tasks' targets."""
        return NYUv2Samples(self.splits[split], [t.name for t in self.tasks], self.num_classes,
                            self.augmentation if augment else None, self.image_normalization)

    def train_batches(self, batch_size, seed, start_step=0, rank=0, world_size=1) -> Iterator:
        sampler = StepBatchSampler(len(self.splits["train"]), batch_size, seed, start_step, rank, world_size,
                                   augment=self.augmentation is not None)
        loader = DataLoader(self.dataset("train", augment=True), batch_sampler=sampler, **self.loader_kwargs)
        return iter(loader)

    def test_batches(self, batch_size, rank=0, world_size=1) -> Iterator:
        key = (batch_size, rank, world_size, tuple(self.task_names))
        if key not in self._test_loaders:  # kept, so that persistent workers survive between evaluations
            sampler = TestBatchSampler(len(self.splits["test"]), batch_size, rank, world_size)
            self._test_loaders[key] = DataLoader(self.dataset("test", augment=False), batch_sampler=sampler,
                                                 **self.loader_kwargs)
        return iter(self._test_loaders[key])


class SplitFiles:
    """The validated file list of one split: ``paths[kind][i]`` is ``<split>/<kind>/<i>.npy``."""

    def __init__(self, directory: Path, paths: dict[str, list[Path]], image_size: tuple[int, int]):
        self.directory, self.paths, self.image_size = directory, paths, image_size

    def __len__(self) -> int:
        return len(self.paths["image"])

    @classmethod
    def scan(cls, root: Path, folder: str) -> SplitFiles:
        """Check the layout, the file names, and every file's header and size (no data is read)."""
        if not root.is_dir():
            raise ConfigError(f"NYUv2 data not found: {root} is not a directory; {HOW_TO_GET}")
        directory = root / folder
        paths: dict[str, list[Path]] = {}
        for kind in KINDS:
            kind_dir = directory / kind
            if not kind_dir.is_dir():
                raise ConfigError(f"NYUv2 data at {root} is malformed: {kind_dir} is missing (expected "
                                  f"{{train,val}}/{{{','.join(KINDS)}}}/<i>.npy); {HOW_TO_GET}")
            paths[kind] = _numbered_files(kind_dir)
        counts = {kind: len(p) for kind, p in paths.items()}
        if len(set(counts.values())) != 1 or counts["image"] == 0:
            raise ConfigError(f"NYUv2 data at {root} is malformed: {directory} holds {counts} .npy files "
                              f"per kind (expected the same non-zero number); {HOW_TO_GET}")
        shape = read_npy_header(paths["image"][0])[0]
        image_size = tuple(shape[:2])
        for kind, trailing in KINDS.items():
            for path in paths[kind]:
                found, _ = read_npy_header(path)
                if tuple(found) != image_size + trailing:
                    raise ConfigError(f"corrupt NYUv2 file {path}: shape {tuple(found)}, expected "
                                      f"{image_size + trailing} like {paths['image'][0].name}'s image")
        return cls(directory, paths, image_size)


def _numbered_files(directory: Path) -> list[Path]:
    """``0.npy .. (n-1).npy`` in ``directory``, in order; a gap or another name is an error."""
    stems = [p.stem for p in directory.iterdir() if p.suffix == ".npy"]
    odd = sorted(s for s in stems if not s.isdigit() or (s != "0" and s.startswith("0")))
    if odd:
        raise ConfigError(f"NYUv2 data at {directory} is malformed: unexpected file {odd[0]}.npy "
                          f"(files are numbered 0.npy, 1.npy, ...); {HOW_TO_GET}")
    numbers = {int(s) for s in stems}
    missing = sorted(set(range(max(numbers, default=-1) + 1)) - numbers)
    if missing:
        raise ConfigError(f"NYUv2 data at {directory} is malformed: {missing[0]}.npy is missing"
                          f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; {HOW_TO_GET}")
    return [directory / f"{i}.npy" for i in range(len(numbers))]


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, checking that the file holds all of its data."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = read(f)
            offset = f.tell()
    except (OSError, ValueError) as err:
        raise ConfigError(f"corrupt NYUv2 file {path}: not a readable .npy file ({first_line(err)})") from None
    if dtype.kind not in "biuf":
        raise ConfigError(f"corrupt NYUv2 file {path}: dtype {dtype} is not numeric")
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise ConfigError(f"corrupt NYUv2 file {path}: {size} bytes, its header says {expected} "
                          "(truncated download? fetch it again)")
    return tuple(shape), dtype


def load_npy(path: Path) -> np.ndarray:
    """The array in ``path``, memory-mapped; a file that cannot be read raises an error naming it."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"corrupt NYUv2 file {path}: {first_line(err)}") from None


class Augmentation:
    """Random zoom (scale-crop) and horizontal flip, applied identically to a sample's arrays."""

    def __init__(self, scales: Sequence[float], flip_prob: float):
        self.scales, self.flip_prob = list(scales), flip_prob

    def __call__(self, sample: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
        """``sample`` maps kind -> C×H×W tensor (labels: H×W); returns the augmented copy."""
        g = torch.Generator().manual_seed(int(seed))
        height, width = sample["image"].shape[-2:]
        scale = self.scales[int(torch.randint(len(self.scales), (), generator=g))]
        h, w = int(height / scale), int(width / scale)
        top = int(torch.randint(height - h + 1, (), generator=g))
        left = int(torch.randint(width - w + 1, (), generator=g))
        flip = bool(torch.rand((), generator=g) < self.flip_prob)
        out = {}
        for kind, value in sample.items():
            crop = value[..., top:top + h, left:left + w]
            if scale != 1.0:
                crop = _resize(crop, (height, width), smooth=kind in ("image", "normal"))
            if kind == "depth":
                crop = crop / scale
            if flip:
                crop = crop.flip(-1)
                if kind == "normal":
                    crop = crop * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
            out[kind] = crop
        return out


def _resize(t: Tensor, size: tuple[int, int], smooth: bool) -> Tensor:
    batched = t[None] if t.dim() == 3 else t[None, None]
    if smooth:
        out = F.interpolate(batched, size=size, mode="bilinear", align_corners=True)
    else:
        out = F.interpolate(batched, size=size, mode="nearest")
    return out[0] if t.dim() == 3 else out[0, 0]


class NYUv2Samples(Dataset):
    """Map-style dataset over one split; an item is ``(index, augmentation_seed_or_None)``."""

    def __init__(self, files: SplitFiles, task_names: list[str], num_classes: int,
                 augmentation: Augmentation | None, image_normalization: str):
        self.files, self.task_names, self.num_classes = files, task_names, num_classes
        self.augmentation = augmentation
        self.kinds = ["image"] + [TASK_KINDS[name] for name in task_names]
        if image_normalization == "imagenet":
            self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        else:
            self.mean = self.std = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int | None]) -> tuple[Tensor, dict[str, Tensor]]:
        index, seed = item
        sample = {kind: self._read(kind, index) for kind in self.kinds}
        if self.augmentation is not None and seed is not None:
            sample = self.augmentation(sample, seed)
        image = sample["image"]
        if self.mean is not None:
            image = (image - self.mean) / self.std
        targets = {name: sample[TASK_KINDS[name]] for name in self.task_names}
        if "seg" in targets:
            targets["seg"] = targets["seg"].round().long()
        return image.contiguous(), {k: v.contiguous() for k, v in targets.items()}

    def _read(self, kind: str, index: int) -> Tensor:
        path = self.files.paths[kind][index]
        array = np.array(load_npy(path), dtype=np.float32)  # a private copy, out of the map
        if not np.isfinite(array).all():
            raise ValueError(f"corrupt NYUv2 file {path}: it holds NaN or infinite values")
        if kind == "label":
            bad = (array != np.round(array)) | (array < -1) | (array >= self.num_classes)
            if bad.any():
                raise ValueError(f"corrupt NYUv2 file {path}: labels must be integers in "
                                 f"[0, {self.num_classes}) or -1, found {array[bad].flat[0]:g}")
            return torch.from_numpy(array)
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 0)))


def augmentation_seed(seed: int, step: int, position: int) -> int:
    """The seed of the sample at ``position`` in the global batch of ``step``."""
    return int(np.random.SeedSequence([int(seed), int(step), int(position)]).generate_state(1)[0])


class StepBatchSampler(Sampler):
    """Endless training batches of ``(index, augmentation seed)`` from ``start_step`` on."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, rank: int, world_size: int,
                 augment: bool):
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        self.rank, self.world_size, self.augment = rank, world_size, augment
        if batch_size * world_size > n:
            raise ConfigError(f"trainer.batch_size={batch_size} on {world_size} process(es) needs more than the "
                              f"{n} training samples")

    def __iter__(self):
        step = self.start_step
        while True:
            indices = step_indices(self.n, self.batch_size, self.seed, step, self.rank, self.world_size)
            first = self.rank * self.batch_size
            yield [(int(i), augmentation_seed(self.seed, step, first + k) if self.augment else None)
                   for k, i in enumerate(indices)]
            step += 1


class TestBatchSampler(Sampler):
    """One pass over the test set: rank r takes the r-th slice of every global batch (no padding,
    so every sample is counted exactly once over all processes)."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int):
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size

    def __iter__(self):
        for start in range(self.rank * self.batch_size, self.n, self.batch_size * self.world_size):
            yield [(i, None) for i in range(start, min(start + self.batch_size, self.n))]

    def __len__(self) -> int:
        return len(range(self.rank * self.batch_size, self.n, self.batch_size * self.world_size))
