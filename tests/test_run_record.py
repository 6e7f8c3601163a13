"""The run record written without pandas, read with it; the trainer's test-loss accumulator."""

import math

import pandas as pd
import pytest
import torch

from gradnorm import run_record
from gradnorm.tasks import NoMetrics, Regression, WeightedMean

#: rows as the loop makes them: evaluation columns on some rows only, a NaN loss, an int flag with gaps
HISTORY = [
    {"step": 0, "test_loss/b": 2.0, "test_loss/a": 1.0, "task_normalized_loss": 2.0, "weight/b": 1.0,
     "weight/a": 1.0, "train_loss/b": 0.5, "train_loss/a": 1e-05, "gradnorm/gradnorm_loss": 3.0},
    {"step": 1, "weight/b": 1.25, "weight/a": 0.75, "train_loss/b": float("nan"), "train_loss/a": float("inf"),
     "skipped": 1},
    {"step": 2, "weight/b": 1 / 3, "weight/a": 5 / 3, "train_loss/b": 1e16, "train_loss/a": -0.0,
     "gradnorm/gradnorm_loss": 0.1},
]


def test_history_csv_is_what_pandas_writes_cell_for_cell(tmp_path):
    """The csv module's file equals pandas' ``to_csv`` of the same rows (columns ordered: step, weights,
    training losses, the rest as they first appear), and reads back to the same values."""
    path = run_record.write_history(tmp_path, HISTORY)
    frame = pd.DataFrame(HISTORY)
    columns = ["step", "weight/a", "weight/b", "train_loss/a", "train_loss/b", "test_loss/b", "test_loss/a",
               "task_normalized_loss", "gradnorm/gradnorm_loss", "skipped"]
    assert run_record.history_columns(HISTORY) == columns
    frame[columns].to_csv(tmp_path / "pandas.csv", index=False)
    assert path.read_text() == (tmp_path / "pandas.csv").read_text()
    assert path.read_text().splitlines()[2].endswith(",1.0")  # an int column with gaps is a float column
    pd.testing.assert_frame_equal(run_record.read_history(tmp_path), frame[columns], check_exact=True)


def test_an_empty_history_is_an_empty_file(tmp_path):
    assert run_record.write_history(tmp_path, []).read_text() == pd.DataFrame([]).to_csv(index=False)


def test_weighted_mean_weights_batches_by_size():
    mean = WeightedMean().to("cpu")
    mean.update(torch.tensor(1.0), 3)
    mean.update(torch.tensor(2.0), 1)
    mean.update(torch.tensor(4.0, dtype=torch.float32), torch.tensor(2))
    assert mean.compute().dtype == torch.float64
    assert float(mean.compute()) == pytest.approx((3 * 1 + 1 * 2 + 2 * 4) / 6, rel=1e-15)
    assert math.isnan(float(WeightedMean().compute()))  # nothing seen: 0/0


def test_a_task_without_metrics_measures_nothing():
    metrics = Regression("a", 2).metrics().to("cpu")
    assert isinstance(metrics, NoMetrics)
    metrics.update(torch.zeros(4, 2), torch.ones(4, 2))
    assert metrics.compute() == {}


def test_an_archived_history_is_the_same_bytes_wherever_and_whenever_it_is_written(tmp_path):
    """Committed archives change only when their numbers do: gzip's header holds no time and no file name
    (the atomic write's temporary name would differ every time)."""
    frame = pd.DataFrame({"step": [0, 1, 2], "train_loss/a": [1.0, 0.123456789, float("nan")], "weight/a": [1.0] * 3})
    first = run_record.write_archived_history(tmp_path / "one", frame)
    second = run_record.write_archived_history(tmp_path / "two", frame)
    assert first.read_bytes() == second.read_bytes()
    assert b".tmp" not in first.read_bytes()
    back = run_record.read_history(tmp_path / "one")
    assert back["train_loss/a"].tolist()[:2] == [1.0, 0.123457] and back["train_loss/a"].isna().tolist()[2]
