"""The table of methods (gradnorm.balancers.METHODS) and what reads it: the conf/balancer names, the
labels and colours of reports, the log keys kept out of a run's metrics, and ``needs``, which picks
the parameters the loop passes to a balancer."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from omegaconf import OmegaConf

from gradnorm import run_record
from gradnorm.balancers import METHODS, Balancer
from gradnorm.cli import compose
from gradnorm.config import CONF_DIR
from gradnorm.models import MLP
from gradnorm.report.runs import method_of
from gradnorm.report.style import method_color, method_label
from gradnorm.train import params_for, train


def test_every_conf_balancer_is_one_method_of_the_table():
    """One yaml per method, named after it; a method's presets (``<method>_<variant>.yaml`` with its ``variant``,
    e.g. gradnorm_libmtl.yaml) are configurations of that method: the table keeps one entry for it."""
    files = {p.stem: OmegaConf.load(p) for p in (CONF_DIR / "balancer").glob("*.yaml")}
    methods = sorted(name for name in files if name in METHODS)
    assert sorted(METHODS) == methods
    for name in methods:
        assert files[name]["_target_"].rsplit(".", 1)[-1] == METHODS[name].__name__
    presets = sorted(set(files) - set(methods))
    assert presets == ["gradnorm_aligned_mtl", "gradnorm_brianlan", "gradnorm_libmtl", "gradnorm_lucasbotang",
                       "gradnorm_lucidrains"]
    for name in presets:
        config = compose([f"balancer={name}"]).balancer
        method = {cls.__name__: key for key, cls in METHODS.items()}[config["_target_"].rsplit(".", 1)[-1]]
        assert name == f"{method}_{config['variant']}"
        assert method_of({"balancer": OmegaConf.to_container(config)}, {"balancer": name})[0] == method


def test_every_method_has_its_own_colour():
    from matplotlib.colors import to_hex

    colours = {name: to_hex(cls.color) for name, cls in METHODS.items() if not name.startswith("test_")}
    assert len(set(colours.values())) == len(colours), colours


def test_labels_take_their_fields_from_the_run_config():
    assert METHODS["gradnorm"].label_for({"alpha": 1.0}) == "GradNorm α=1"
    assert METHODS["gradnorm"].label_for({"alpha": 0.12}) == "GradNorm α=0.12"
    assert METHODS["gradnorm"].label_for() == "GradNorm"
    assert METHODS["grid"].label_for({"index": 7}) == "Grid #7"
    assert METHODS["fixed"].label_for({"weights": [1, 3]}) == "Fixed [1, 3]"
    assert METHODS["equal"].label_for({"anything": 1}) == "Equal weights"


class HalfWeights(Balancer):
    """w_i = 1/2: a method of a test, which must reach the reports with no other edit."""

    name = "test_half"
    label = "Half ×{scale}"
    color = "#123456"
    log_prefix = "half/"
    needs = "shared"

    #: how many shared parameters each backward() call received
    seen_params: ClassVar[list[int]] = []

    def __init__(self, num_tasks: int, scale: float = 0.5):
        super().__init__(num_tasks)
        self.scale = scale

    @property
    def weights(self):
        return torch.full((self.num_tasks,), self.scale)

    def backward(self, losses, shared_params=(), features=None):
        self.seen_params.append(len(shared_params))
        super().backward(losses, shared_params)
        return {"half/calls": float(len(self.seen_params))}


METHODS.pop(HalfWeights.name)  # the table holds the package's methods except while a test below runs


@pytest.fixture
def half_weights_method():
    METHODS[HalfWeights.name] = HalfWeights
    HalfWeights.seen_params.clear()
    yield HalfWeights
    METHODS.pop(HalfWeights.name)


def test_a_new_balancer_reaches_reports_and_the_loop_by_itself(half_weights_method, tmp_path):
    config = {"balancer": {"_target_": "test_method_table.HalfWeights", "scale": 0.5}, "tasks": None}
    assert method_of(config, {}) == ("test_half", "Half ×0.5")
    assert method_color("test_half") == "#123456" and method_label("test_half") == "Half"

    from conftest import tiny_toy

    cfg = tiny_toy("trainer.max_steps=3", "trainer.eval_every=3", "model.width=8", "model.depth=2")
    cfg.balancer = OmegaConf.create({"_target_": "test_method_table.HalfWeights"})
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["weights"] == [0.5, 0.5]
    assert HalfWeights.seen_params == [4, 4, 4]  # needs="shared": the trunk's 2 weights and 2 biases, each step


def test_a_balancers_log_keys_stay_out_of_the_summary_metrics():
    history = [{"step": 0, "weight/a": 1.0, "test_loss/a": 2.0, "task_normalized_loss": 1.0, "half/calls": 1.0,
                "train_loss/a": 3.0}, {"step": 1, "weight/a": 1.0, "test_loss/a": 1.5, "task_normalized_loss": 0.75}]
    interrupted = history[:1]
    kept = run_record.summarize("interrupted", "stopped", ["a"], [1.0], interrupted, 1, 1, 0.0, {}, 10)
    dropped = run_record.summarize("interrupted", "stopped", ["a"], [1.0], interrupted, 1, 1, 0.0, {}, 10,
                                   log_prefix=HalfWeights.log_prefix)
    assert kept["metrics"] == {"test_loss/a": 2.0, "task_normalized_loss": 1.0, "half/calls": 1.0}
    assert dropped["metrics"] == {"test_loss/a": 2.0, "task_normalized_loss": 1.0}
    assert run_record.summarize("completed", None, ["a"], [1.0], history, 1, 1, 0.0, {}, 10)["mean_weights"] == [1.0]


def test_needs_picks_the_parameters_the_loop_passes(half_weights_method):
    net = MLP(3, {"a": 2, "b": 1}, width=4, depth=2)
    assert params_for(HalfWeights(2), net) == net.shared_parameters()
    assert params_for(METHODS["gradnorm"](2), net) == [net.trunk[-2].weight]


def test_shared_parameters_are_every_parameter_outside_the_heads():
    net = MLP(3, {"a": 2, "b": 1}, width=4, depth=2)
    shared = net.shared_parameters()
    # trunk: Linear(3, 4) and Linear(4, 4), weights and biases, in definition order
    assert [tuple(p.shape) for p in shared] == [(4, 3), (4,), (4, 4), (4,)]
    assert sum(p.numel() for p in shared) == 3 * 4 + 4 + 4 * 4 + 4
    heads = {id(p) for p in net.heads.parameters()}
    assert not heads & {id(p) for p in shared}
    assert len(shared) + len(heads) == len(list(net.parameters()))


def test_a_second_balancer_of_the_same_name_is_refused():
    with pytest.raises(TypeError, match="two balancers are named 'gradnorm'"):
        type("Impostor", (Balancer,), {"name": "gradnorm", "label": "x", "color": "#000000"})


def test_needs_must_be_one_of_the_two_kinds():
    with pytest.raises(TypeError, match="needs must be 'last_shared' or 'shared'"):
        type("Odd", (Balancer,), {"name": "test_odd", "label": "x", "color": "#000000", "needs": "all"})
    assert "test_odd" not in METHODS
