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
