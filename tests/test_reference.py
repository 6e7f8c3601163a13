"""A regenerated results folder is compared with the one it replaces: largest relative changes and
changed verdicts (the machine-to-machine spread made visible)."""

import json

import pandas as pd
import pytest

from gradnorm.report.reference import Reference, comparison_markdown, largest_change


def _runs(values):
    return pd.DataFrame({"run_dir": ["a", "b", "c"], "status": ["completed"] * 3, "method": ["equal", "equal", "gradnorm"],
                         "num_tasks": [2, 2, 2], "seed": [0, 1, 0], "wall_time_s": [1.0, 50.0, 3.0],
                         "task_normalized_loss": values})


def _claims(path, verdict):
    path.write_text(json.dumps({"experiment": "toy", "claims": [
        {"id": "fig2.lowest_test_loss", "setting": "toy T=2", "verdict": verdict},
        {"id": "fig2.equal_swamped", "setting": "toy T=2", "verdict": "reproduced"}]}))


def test_largest_relative_change_matches_rows_and_ignores_timing():
    old, new = _runs([1.0, 2.0, 4.0]), _runs([1.01, 1.9, 4.0])
    new["wall_time_s"] = [100.0, 1.0, 1.0]  # timing is not a result
    value, where = largest_change(old, new, ["run_dir"])
    assert value == pytest.approx(0.05) and where.startswith("task_normalized_loss (run_dir=b): 2 → 1.9")


def test_comparison_lists_group_means_and_changed_verdicts(tmp_path):
    _runs([1.0, 2.0, 4.0]).to_csv(tmp_path / "old.csv", index=False)
    _claims(tmp_path / "old.json", "not reproduced")
    reference = Reference.read(tmp_path / "old.csv", tmp_path / "old.json")
    _runs([1.0, 2.2, 3.0]).to_csv(tmp_path / "new.csv", index=False)
    _claims(tmp_path / "new.json", "partly reproduced")
    text = comparison_markdown(reference, tmp_path / "new.csv", tmp_path / "new.json", "toy")
    assert "| per run (final metrics and weights) | 25.00% | task_normalized_loss (run_dir=c): 4 → 3 |" in text
    # equal's mean over its two seeds: 1.5 -> 1.6 (+6.67%), gradnorm's 4 -> 3 (25%)
    assert "| group means over seeds | 25.00% |" in text
    assert "Verdicts: 1 unchanged, 1 changed" in text
    assert "| fig2.lowest_test_loss | toy T=2 | not reproduced | partly reproduced |" in text
    first = comparison_markdown(Reference.read(tmp_path / "none.csv", tmp_path / "none.json"), tmp_path / "new.csv",
                                tmp_path / "new.json", "toy")
    assert "No reference" in first
