"""What each entry point imports, pinned: a module that starts importing a heavy package at module level
shows up here, not as seconds added to every command and every job of a sweep.

``import gradnorm.cli`` (``run.py --help``, a bad override) imports no torch; the library
(``gradnorm.balancers``) imports torch and numpy only; a toy run with ``logger=none`` imports none of
torchmetrics, torchvision, matplotlib, W&B or pandas (NYUv2's tasks and backbones, reports and the W&B
logger import them where they are used); the reports import no torchmetrics or torchvision. Each probe runs in a
fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: seconds to import, and not needed to train the toy
HEAVY = {"torchmetrics", "torchvision", "matplotlib", "wandb", "pandas"}
#: the suite's own dependencies, which the library must not need
SUITE = HEAVY | {"hydra", "omegaconf", "yaml", "antlr4"}


def loaded(code: str, cwd: Path = ROOT) -> set[str]:
    """The modules loaded after ``code`` ran in a fresh interpreter: top-level packages, and
    ``torch._dynamo`` (the second of torch's import, paid by the first optimiser)."""
    probe = (f"{code}\nimport json, sys\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} | "
             "({'torch._dynamo'} & set(sys.modules)))))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled",
                                 "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_the_command_line_imports_no_torch():
    modules = loaded("import gradnorm.cli")
    assert "gradnorm" in modules
    assert not modules & (HEAVY | {"torch", "numpy", "hydra"}), modules & (HEAVY | {"torch", "numpy", "hydra"})


def test_the_library_imports_torch_and_numpy_only():
    modules = loaded("import gradnorm.balancers")
    assert {"torch", "numpy"} <= modules
    assert not modules & (SUITE | {"torch._dynamo"}), modules & (SUITE | {"torch._dynamo"})


@pytest.mark.slow
def test_a_toy_run_imports_none_of_the_heavy_packages(tmp_path):
    """``run.py`` itself, two steps of the toy with logger=none (W&B imports pandas when it logs)."""
    modules = loaded("import runpy, sys\n"
                     f"sys.argv = ['run.py', 'logger=none', 'trainer.max_steps=2', 'trainer.progress=false']\n"
                     f"try:\n    runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')\n"
                     "except SystemExit as stop:\n    assert not stop.code, stop.code", cwd=tmp_path)
    assert {"torch", "hydra", "gradnorm"} <= modules
    assert not modules & HEAVY, modules & HEAVY
    assert list(tmp_path.glob("outputs/*/*/*/summary.json")), "the run wrote no summary"


def test_nyuv2_names_still_import_from_their_packages():
    from gradnorm.data import NYUv2
    from gradnorm.models import FCN, SegNet, ThinResNet
    from gradnorm.tasks import Depth, Normals, Segmentation

    assert [c.__module__ for c in (NYUv2, FCN, SegNet, ThinResNet, Depth, Normals, Segmentation)] == [
        "gradnorm.data.nyuv2", "gradnorm.models.fcn", "gradnorm.models.segnet", "gradnorm.models.resnet",
        "gradnorm.tasks.depth", "gradnorm.tasks.normals", "gradnorm.tasks.segmentation"]
    import gradnorm.tasks

    with pytest.raises(AttributeError, match="has no attribute 'Dpeth'"):
        gradnorm.tasks.Dpeth  # noqa: B018


def test_the_reports_import_no_metric_classes():
    """Reports need the metrics' names and directions (gradnorm.tasks.directions), not torchmetrics and the
    torchvision it imports: seconds off every `scripts/reproduce.py` report."""
    modules = loaded("import gradnorm.report.build, gradnorm.report.literature")
    assert {"matplotlib", "pandas"} <= modules
    assert not modules & {"torchmetrics", "torchvision"}, modules & {"torchmetrics", "torchvision"}
