"""``imgcls tune``: hyper-parameter search with Optuna (TPE sampler, median pruner).

Each trial is an ordinary ``imgcls train`` run whose validation accuracy is reported after
every epoch, so weak trials are stopped early. The study lives in SQLite: a stopped search
resumes where it was, and several processes can work on one study at once. The best trial's
configuration is written as a YAML file that ``imgcls train --config`` takes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import DEFAULT_EPOCHS, TrainConfig
from .engine.trainer import Callback, Trainer
from .training import Log, train
from .utils import write_yaml


def suggest(trial: object) -> dict:
    """The search space: optimizer with its learning-rate range, weight decay, batch size,
    label smoothing, augmentation strength and schedule."""
    opt = trial.suggest_categorical("optimizer", ["sgd", "adamw"])
    lo, hi = (0.01, 0.5) if opt == "sgd" else (1e-4, 1e-2)
    return {
        "optimizer": opt,
        "lr": trial.suggest_float(f"lr_{opt}", lo, hi, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "augment": trial.suggest_categorical("augment", ["none", "light", "standard", "strong"]),
        "schedule": trial.suggest_categorical("schedule", ["onecycle", "cosine"]),
    }


class _Report(Callback):
    """Reports val accuracy to Optuna after each epoch; raises TrialPruned when it says so."""

    def __init__(self, trial: object) -> None:
        self.trial = trial

    def on_epoch_end(self, t: Trainer, record: dict) -> None:
        import optuna

        self.trial.report(record.get("val_top1", 0.0), record["epoch"])
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def open_storage(url: str) -> object:
    """An Optuna storage: ``journal:PATH`` is a journal file (shared through a network file
    system), anything else an RDB URL (``sqlite:///...``, ``postgresql://...``)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return url


def tune(base: TrainConfig, out: str | os.PathLike, *, trials: int = 20,
         budget_s: float | None = None, study_name: str = "imgcls", seed: int = 0,
         storage: str | None = None, log: Log = print) -> dict:
    """Run (or resume) the study in ``storage`` (default: ``out/study.db``, SQLite) until it
    has ``trials`` finished trials or ``budget_s`` seconds have passed; write ``best.yaml``
    and ``search.png``. Several processes, on one machine or many, may work on one study.
    Returns the best trial's value and configuration."""
    import optuna

    if base.val_split <= 0:
        raise ValueError("tuning needs a validation split (--val-split > 0)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if base.epochs is None:  # every trial trains the same number of epochs
        base = base.replace(epochs=DEFAULT_EPOCHS)
    where = storage or f"sqlite:///{out / 'study.db'}"
    study = optuna.create_study(
        study_name=study_name, storage=open_storage(where), load_if_exists=True,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    # Every start of the study (a resumed search, each of several workers) samples with a
    # seed of its own: the same seed would repeat the earlier trials' parameters exactly.
    # constant_liar keeps concurrent workers from proposing the same point.
    study.sampler = optuna.samplers.TPESampler(
        seed=hash((seed, len(study.trials), os.getpid())) % 2**31, constant_liar=True)
    done = [t for t in study.trials if t.state.is_finished()]
    log(f"study {study_name} in {where}: {len(done)} trial(s) done, "
        f"{max(0, trials - len(done))} to go")

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial)
        trial.set_user_attr("config", params)  # config keys, not Optuna's parameter names
        cfg = base.replace(**params, out=str(out / "trials"),
                           name=f"trial-{trial.number:03d}", resume=None)
        r = train(cfg, log=lambda _: None, callbacks=[_Report(trial)])
        best = max(h.get("val_top1", 0.0) for h in r.history)
        trial.set_user_attr("run", str(r.path))
        log(f"trial {trial.number}: val top-1 {best:.4f} {trial.params}")
        return best

    remaining = max(0, trials - len(done))
    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=budget_s,
                       catch=(ValueError,), gc_after_trial=True)
    best = study.best_trial
    best_cfg = base.replace(**best.user_attrs["config"], resume=None, name=None)
    write_yaml(out / "best.yaml", best_cfg.to_dict())
    plot_search(study, out / "search.png")
    return {"value": best.value, "params": best.params, "config": str(out / "best.yaml"),
            "trials": len(study.trials)}


def plot_search(study: object, path: Path) -> Path:
    """Every finished trial's value (pruned ones hollow) and the best so far."""
    import optuna

    from .report.plots import _save, plt

    fig, ax = plt.subplots(figsize=(6, 4))
    best, xs, ys = float("-inf"), [], []
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            ax.scatter(t.number, t.value, color="tab:blue", zorder=3)
            best = max(best, t.value)
            xs.append(t.number)
            ys.append(best)
        elif t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            v = list(t.intermediate_values.values())[-1]
            ax.scatter(t.number, v, facecolors="none", edgecolors="tab:gray", zorder=3)
    ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("val top-1")
    ax.set_title("hyper-parameter search (hollow: pruned)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
