"""Bad input through the real command line: each case must end with exactly one clear line on stderr
(``error: ...`` naming the bad value and what is allowed), a non-zero exit, no traceback, and
nothing already written lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runs import ROOT, TINY, run_cli, tiny_config

from gradnorm.checkpoint import CHECKPOINT
from gradnorm.train import train


def assert_one_error(result, *fragments: str, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_unknown_option_gives_one_error_line(tmp_path):
    """A Hydra-level mistake (bad values of the config keys: tests/test_bad_values.py)."""
    result = run_cli([*TINY, "balancer=gradnrom"], cwd=tmp_path)
    options = ", ".join(sorted(p.stem for p in (ROOT / "conf" / "balancer").glob("*.yaml")))
    assert "cagrad, dwa, equal, famo, fixed, gradnorm" in options
    assert_one_error(result, "unknown balancer 'gradnrom'", f"choose one of: {options}")
    assert not list(tmp_path.rglob("summary.json"))


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "conf" / "experiment" / "nyuv2_segnet.yaml").exists(),
                    reason="experiment=nyuv2_segnet comes with the NYUv2 branch; this case runs once it is merged")
def test_missing_data_root_gives_one_error_line(tmp_path):
    missing = tmp_path / "no_such_folder"
    result = run_cli(["experiment=nyuv2_segnet", f"dataset.root={missing}", "logger=none", "trainer.progress=false"],
                     cwd=tmp_path)
    line = assert_one_error(result, str(missing), "download_nyuv2.py")
    assert line.startswith(f"error: dataset: NYUv2 data not found: {missing} ")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run with a checkpoint (trained in-process: fast)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config("trainer.max_steps=2", "trainer.checkpoint_every=1"), run_dir)
    return run_dir


@pytest.mark.slow
def test_resume_with_a_different_config_is_refused(tmp_path, finished_run):
    before = snapshot(finished_run)
    result = run_cli([*TINY, "trainer.max_steps=4", f"trainer.resume={finished_run}", "alpha=0.5"], cwd=tmp_path)
    assert_one_error(result, "cannot resume with a different config", "alpha: 0.12 -> 0.5")
    assert snapshot(finished_run) == before


@pytest.mark.slow
def test_unreadable_checkpoint_is_refused(tmp_path, finished_run):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name, data in snapshot(finished_run).items():
        (broken / name).parent.mkdir(parents=True, exist_ok=True)
        (broken / name).write_bytes(data)
    checkpoint = broken / CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # truncated, as by a full disk
    before = snapshot(broken)
    result = run_cli([*TINY, f"trainer.resume={broken}"], cwd=tmp_path)
    assert_one_error(result, f"checkpoint {checkpoint} is unreadable")
    assert snapshot(broken) == before
