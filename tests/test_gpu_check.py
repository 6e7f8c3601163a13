"""`make gpu-check` (scripts/gpu_check.py): one line and exit 0 without CUDA; with --allow-cpu, the
same logic end to end at a tiny size (tests, bench, generated data, CLI training, the report)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_one_line_and_exit_0(gpu_check, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "gpu")]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") == 1 and "no CUDA device" in out.out and not out.err
    assert not (tmp_path / "gpu").exists()


def test_bad_options_are_one_error(gpu_check):
    with pytest.raises(SystemExit):
        gpu_check.main(["--backbones", "vgg"])


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU stand-in; on a GPU make gpu-check is the real thing")
def test_the_whole_check_on_a_cpu_at_a_tiny_size(gpu_check, tmp_path, capsys):
    out = tmp_path / "gpu"
    # Smallest: the cuda tests of test_cuda.py only (skipped on a CPU), no bench warm-up, and no bench
    # peak-memory process (tests/test_bench.py checks it; on a CPU it takes longest).
    code = gpu_check.main(["--allow-cpu", "--tests", "tests/test_cuda.py", "--size", "32x32", "--batch", "2",
                           "--rounds", "1", "--bench-warmup", "0", "--no-bench-memory", "--backbones", "segnet",
                           "--train-steps", "2", "--train-images", "4", "--train-batch", "2", "--scale", "5",
                           "--out", str(out)])
    readme = (out / "README.md").read_text()
    assert code == 0, readme
    assert "## 1. Tests marked `cuda`" in readme and "-m cuda" in readme
    assert "| segnet |" in readme and (out / "bench" / "bench.json").exists()
    assert "status `completed`" in readme and "ms per step" in readme and "20,000-step run" in readme
    assert sys.executable not in readme
