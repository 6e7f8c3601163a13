"""The library as a practitioner installs it: a wheel built from this tree, imported outside the checkout.

``gradnorm.balancers`` must import with torch (and numpy) only: none of the suite's dependencies (Hydra,
OmegaConf, pandas, matplotlib, W&B, torchvision, torchmetrics) and no file outside the package (conf/).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE_ONLY = ("hydra", "omegaconf", "pandas", "matplotlib", "wandb", "torchvision", "torchmetrics", "yaml", "antlr4")

#: run outside the checkout: import the balancers, train two steps of a two-task model, report what loaded
PROBE = r"""
import json, sys
import torch
from gradnorm.balancers import METHODS, GradNorm
torch.manual_seed(0)
trunk, heads = torch.nn.Linear(4, 8), [torch.nn.Linear(8, 1) for _ in range(2)]
balancer = GradNorm(2, alpha=1.5)
for _ in range(2):
    z = torch.relu(trunk(torch.randn(16, 4)))
    losses = torch.stack([head(z).pow(2).mean() for head in heads])
    balancer.backward(losses, trunk)
    balancer.step()
import gradnorm
print(json.dumps({"file": gradnorm.__file__, "methods": sorted(METHODS),
                  "weights": balancer.weights.tolist(),
                  "modules": sorted({m.split('.')[0] for m in sys.modules})}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel of this tree (built offline from a copy of the package), installed into a folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT / "gradnorm", source / "gradnorm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)],
                   check=True, capture_output=True, text=True)
    (wheel,) = (tmp / "dist").glob("gradnorm_repro-*.whl")
    target = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, text=True)
    return target


@pytest.mark.slow
def test_the_wheel_imports_the_balancers_outside_the_checkout_with_torch_only(installed, tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env={"PYTHONPATH": str(installed)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(probe["file"]).is_relative_to(installed), probe["file"]  # the wheel's copy, not the checkout's
    assert "gradnorm" in probe["methods"] and "nash_mtl" in probe["methods"]
    assert sum(probe["weights"]) == pytest.approx(2.0)
    assert not set(probe["modules"]) & set(SUITE_ONLY), set(probe["modules"]) & set(SUITE_ONLY)


def test_the_wheel_needs_torch_and_numpy_only(installed):
    (metadata,) = installed.glob("gradnorm_repro-*.dist-info/METADATA")
    required = [line.split(":", 1)[1].strip() for line in metadata.read_text().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in required) == ["numpy", "torch"]
    assert not any("==" in r for r in required), required  # ranges: a user's torch is never replaced


def test_the_suite_pins_its_torch_pair_in_a_constraints_file():
    pins = {line.split("==")[0]: line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_the_package_data_is_in_the_wheel(installed):
    assert (installed / "gradnorm" / "report" / "paper_numbers.yaml").is_file()
    wheel_files = {p.relative_to(installed).as_posix() for p in (installed / "gradnorm").rglob("*.py")}
    assert "gradnorm/balancers/gradnorm.py" in wheel_files
