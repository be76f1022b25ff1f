"""A tiny search end to end: run, stop, resume from SQLite, train from the best YAML."""

import yaml

from imgcls.cli import main

FLAGS = ["--data", "digits", "--epochs", "2", "--precision", "fp32", "--channels-last", "no",
         "--progress", "false"]


def test_tune_stop_resume_and_train_from_best(tmp_path, capsys):
    study = tmp_path / "study"
    assert main(["tune", "--trials", "2", "--study-dir", str(study), *FLAGS]) == 0
    import optuna

    s = optuna.load_study(study_name="imgcls", storage=f"sqlite:///{study / 'study.db'}")
    assert len(s.trials) == 2
    # "stopped" after two trials; a second process resumes the same study up to three
    assert main(["tune", "--trials", "3", "--study-dir", str(study), *FLAGS]) == 0
    s = optuna.load_study(study_name="imgcls", storage=f"sqlite:///{study / 'study.db'}")
    assert len(s.trials) == 3 and all(t.state.is_finished() for t in s.trials)
    best = yaml.safe_load((study / "best.yaml").read_text())
    assert best["optimizer"] in ("sgd", "adamw") and best["data"] == "digits"
    assert (study / "search.png").stat().st_size > 5000
    capsys.readouterr()
    assert main(["train", "--config", str(study / "best.yaml"), "--out", str(tmp_path),
                 "--name", "from-best"]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_help_says_what_budget_and_epochs_do_in_a_search(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    import imgcls.tune
    from imgcls.cli import build_parser
    from imgcls.config import DEFAULT_EPOCHS

    sub = next(a for a in build_parser()._actions if a.choices and "tune" in a.choices)
    helps = {a.dest: a.help for a in sub.choices["tune"]._actions}
    assert "the whole search" in helps["budget"] and "no trial starts after it" in helps["budget"]
    assert f"(default: {DEFAULT_EPOCHS};" in helps["epochs"]
    trials = []

    def train(cfg, log, callbacks):  # what a trial is given to train, without training
        trials.append(cfg)
        return SimpleNamespace(history=[{"val_top1": 0.5}], path=tmp_path)

    monkeypatch.setattr(imgcls.tune, "train", train)
    assert main(["tune", "--trials", "2", "--budget", "1h", "--study-dir", str(tmp_path),
                 *FLAGS[:2]]) == 0
    # every trial trains the default epochs, with no budget of its own
    assert [(c.epochs, c.budget) for c in trials] == [(DEFAULT_EPOCHS, None)] * 2
