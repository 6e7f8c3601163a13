import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")

os.environ.setdefault("WANDB_MODE", "disabled")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the tests in parallel processes, one per core (pytest-xdist): each computes on one
    # thread, and so do the processes it starts (two thread pools on one core wait on each other).
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The long tests (marked ``slow``) first: run in parallel, they start early and the short ones fill
    the gaps, instead of one long test left running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def compose_config(*overrides: str):
    """The config `python run.py <overrides>` would get (without Hydra's runtime keys)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def tiny_toy(*overrides: str):
    """A toy config that trains in well under a second."""
    return compose_config("logger=none", "trainer.progress=false", "trainer.max_steps=6", "trainer.eval_every=3",
                          "dataset.num_train=200", "dataset.num_test=100", "trainer.batch_size=20", *overrides)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one CPU thread is faster, and far faster on a busy shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
