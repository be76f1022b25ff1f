import json

from imgcls.cli import main
from imgcls.compare import compare, leaderboard_markdown, pareto_front, plot_leaderboard


def test_pareto_front_known_answer():
    rows = [{"model": "a", "latency_ms": 1.0, "top1": 0.80},
            {"model": "b", "latency_ms": 2.0, "top1": 0.90},
            {"model": "c", "latency_ms": 3.0, "top1": 0.85},  # b is faster and better
            {"model": "d", "latency_ms": 4.0, "top1": 0.95},
            {"model": "e", "latency_ms": 1.0, "top1": 0.70}]  # a: as fast, better
    assert pareto_front(rows) == ["a", "b", "d"]


def test_compare_cli_writes_a_leaderboard(tmp_path, capsys):
    out = tmp_path / "lb"
    rc = main(["compare", "--models", "seed_torch_cnn,seed_keras_cnn", "--data", "digits",
               "--epochs", "1", "--image-size", "12", "--precision", "fp32",
               "--channels-last", "no", "--progress", "false", "--leaderboard", str(out)])
    assert rc == 0
    rows = json.loads((out / "leaderboard.json").read_text())
    assert {r["model"] for r in rows} == {"seed_torch_cnn", "seed_keras_cnn"}
    assert all(r["latency_ms"] > 0 and r["params"] > 0 and 0 < r["top1"] <= 1
               and r["split"] == "test" for r in rows)
    assert any(r["pareto"] for r in rows)
    assert (out / "leaderboard.png").stat().st_size > 5000
    out = capsys.readouterr().out
    assert "| seed_torch_cnn |" in out and "| model | test top-1 |" in out


def test_a_leaderboard_without_a_test_split_names_the_validation_split(tmp_path,
                                                                      monkeypatch):
    import imgcls.report.plots as plots

    rows = [{"model": m, "top1": top1, "split": "val", "params": 1e5, "flops": 1e7,
             "latency_ms": ms, "run_s": 30.0, "epochs": 5, "pareto": True}
            for m, top1, ms in (("a", 1.0, 1.0), ("b", 0.97, 0.5))]
    text = leaderboard_markdown(rows)
    assert "| model | val top-1 |" in text and "test" not in text.splitlines()[0]
    assert "also chose each model's best epoch" in text
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plot_leaderboard(rows, tmp_path / "lb.png")
    ax = figures[0].axes[0]
    assert ax.get_ylabel() == "val top-1"
    assert ax.get_ylim()[1] == 1.0 and ax.get_ylim()[0] < 0.97  # 1 is the most there is


class Clock:
    """A clock for the budget and the run's time that only moves when told."""

    def __init__(self):
        self.now = 100.0

    def perf_counter(self):
        return self.now

    def after(self, seconds, fn):
        """``fn`` that takes ``seconds`` of this clock."""
        def timed(*args, **kwargs):
            self.now += seconds(*args, **kwargs) if callable(seconds) else seconds
            return fn(*args, **kwargs)
        return timed


def test_the_per_model_budget_covers_the_whole_run(tmp_path, monkeypatch):
    """Simulated: 2 s of loading and planning, 50 ms per step, 0.1 s per validation pass,
    and final passes (calibration on the validation split, the test split) at that pace:
    the model's whole run, the leaderboard's 'run s', fits in its 6 s."""
    import imgcls.engine.budget as budget
    import imgcls.resolve as resolve
    import imgcls.training as training
    from imgcls.config import TrainConfig
    from imgcls.engine.trainer import Trainer

    clock = Clock()
    for module in (budget, resolve, training):
        monkeypatch.setattr(module, "time", clock)
    monkeypatch.setattr(resolve, "measure_step", lambda *a, **k: 0.05)
    monkeypatch.setattr(resolve, "resolve_data", clock.after(2.0, resolve.resolve_data))
    monkeypatch.setattr(Trainer, "train_step", clock.after(0.05, Trainer.train_step))
    monkeypatch.setattr(Trainer, "validate", clock.after(0.1, Trainer.validate))

    def final_passes(run, cfg, data, plan, log):
        return 0.1 * (len(data.val) + len(data.test)) / len(data.val)

    monkeypatch.setattr(training, "_final_figures",
                        clock.after(final_passes, training._final_figures))
    base = TrainConfig(data="digits", budget="6s", batch_size=128, precision="fp32",
                       channels_last="no", progress=False)
    rows = compare(["seed_torch_cnn"], base, tmp_path / "lb", log=lambda _: None)
    assert rows[0]["epochs"] > 2 and rows[0]["run_s"] <= 6.0
