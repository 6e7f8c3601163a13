"""`make bench` smoke test: a tiny --quick run writes the README and bench.json with every row."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # Hydra finds the reference row's class by this name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench"]


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_quick_run_writes_the_report_with_every_row(bench, tmp_path, restore_threads, capsys):
    out = tmp_path / "bench"
    code = bench.main(["--quick", "--threads", "1", "--rounds", "1", "--warmup", "0", "--cases", "mlp_t2,convnet",
                       "--size", "16x16", "--out", str(out)])
    assert code == 0
    readme = (out / "README.md").read_text()
    for case in ("mlp_t2", "convnet"):
        for row in bench.ROWS:
            assert f"| {case} | {row.label} |" in readme
    assert "GradNorm against its targets: mlp_t2 " in readme and "convnet " in readme
    assert torch.__version__ in readme and "intra-op threads" in readme
    assert "| mlp_t2 | gradnorm |" in capsys.readouterr().out  # the table is printed too

    report = json.loads((out / "bench.json").read_text())
    rows = report["cases"]["convnet"]["rows"]
    assert set(rows) == {row.label for row in bench.ROWS}
    assert rows["equal"]["ratio"] == 1.0 and rows["gradnorm"]["images_per_s"] > 0
    if sys.platform == "linux":
        assert all(r["step_peak_mib"] is not None and r["step_peak_mib"] >= 0 for r in rows.values())
    assert not list(out.glob(".*.tmp"))  # written atomically


def test_unknown_case_is_one_clear_error(bench):
    with pytest.raises(SystemExit, match=r"error: unknown case 'segnett'; choose from mlp_t2, mlp_t10"):
        bench.main(["--cases", "mlp_t2,segnett"])
    with pytest.raises(SystemExit, match="--size must be HEIGHTxWIDTH"):
        bench.main(["--size", "64"])


def test_balancers_option_keeps_their_rows_and_equal_weights(bench, tmp_path, restore_threads):
    out = tmp_path / "bench"
    assert bench.main(["--quick", "--threads", "1", "--rounds", "1", "--cases", "mlp_t2", "--balancers", "pcgrad",
                       "--out", str(out)]) == 0
    rows = json.loads((out / "bench.json").read_text())["cases"]["mlp_t2"]["rows"]
    assert list(rows) == ["equal", "pcgrad"] and rows["equal"]["ratio"] == 1.0 and rows["pcgrad"]["ratio"] > 0
    with pytest.raises(SystemExit, match=r"error: unknown balancer 'gradnrm'; choose from equal, fixed"):
        bench.main(["--balancers", "gradnorm,gradnrm"])


def test_flops_at_w_counts_ws_forward_and_the_whole_step():
    """scripts/flops_at_w.py (docs/performance.md's FLOP floor): W's forward is 2·batch·in·out
    multiply-adds for a Linear W, and a step (forward and backward) costs more than three of it."""
    spec = importlib.util.spec_from_file_location("flops_at_w", SCRIPT.parent / "flops_at_w.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from gradnorm.models import MLP

    net = MLP(4, {"a": 2, "b": 3}, width=6, depth=2)
    layer = net.last_shared_layer
    step, w_forward = module.floor(net, torch.randn(5, 4))
    assert w_forward == 2 * 5 * layer.in_features * layer.out_features
    assert step > 3 * w_forward
