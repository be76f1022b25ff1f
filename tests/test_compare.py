import json

from imgcls.cli import main
from imgcls.compare import pareto_front


def test_pareto_front_known_answer():
    rows = [{"model": "a", "latency_ms": 1.0, "test_top1": 0.80},
            {"model": "b", "latency_ms": 2.0, "test_top1": 0.90},
            {"model": "c", "latency_ms": 3.0, "test_top1": 0.85},  # b is faster and better
            {"model": "d", "latency_ms": 4.0, "test_top1": 0.95},
            {"model": "e", "latency_ms": 1.0, "test_top1": 0.70}]  # a: as fast, better
    assert pareto_front(rows) == ["a", "b", "d"]


def test_compare_cli_writes_a_leaderboard(tmp_path, capsys):
    out = tmp_path / "lb"
    rc = main(["compare", "--models", "seed_torch_cnn,seed_keras_cnn", "--data", "digits",
               "--epochs", "1", "--image-size", "12", "--precision", "fp32",
               "--channels-last", "no", "--progress", "false", "--leaderboard", str(out)])
    assert rc == 0
    rows = json.loads((out / "leaderboard.json").read_text())
    assert {r["model"] for r in rows} == {"seed_torch_cnn", "seed_keras_cnn"}
    assert all(r["latency_ms"] > 0 and r["params"] > 0 and 0 < r["test_top1"] <= 1
               for r in rows)
    assert any(r["pareto"] for r in rows)
    assert (out / "leaderboard.png").stat().st_size > 5000
    assert "| seed_torch_cnn |" in capsys.readouterr().out
