"""``imgcls train --resume RUN``: the run's own configuration (only ``--epochs`` may change),
its last checkpoint (the one before, when that one is damaged), whether it has anything left
to do, and Ctrl-C turned into an interruption that names the run to resume."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .config import TrainConfig
from .engine.checkpoint import Checkpoint, load_latest, previous_path
from .engine.trainer import TrainState
from .errors import ConfigError, RunError, TrainingInterrupted
from .run import RunDir
from .utils import Log

RESUMABLE = ("resume", "epochs", "progress")  # what --resume may be given besides the run


def resume_config(cfg: TrainConfig) -> tuple[TrainConfig, RunDir]:
    """The configuration saved in the run ``cfg.resume`` names (with ``cfg``'s epochs and
    progress), and the run; a key given with a value other than the run's is an error."""
    run = RunDir.open(cfg.resume, need_model=False)
    if not run.config.exists():
        raise RunError(f"{cfg.resume}: no config.yaml, not a run folder")
    saved = TrainConfig.from_yaml(run.config)
    # Only the number of epochs may change on resume (to extend a finished run), and whether
    # progress bars show; anything else would make the resumed run differ from an
    # uninterrupted one, so a key given with another value is an error, not ignored.
    defaults, given = TrainConfig().to_dict(), cfg.to_dict()
    changed = [k for k, v in given.items() if k not in RESUMABLE and v != defaults[k]
               and v != getattr(saved, k)]
    if changed:
        raise ConfigError(f"{cfg.resume}: {', '.join(changed)} cannot change on --resume "
                          f"(the run has {', '.join(f'{k} {getattr(saved, k)!r}' for k in changed)}"
                          "); only --epochs can. Start a new run to train otherwise")
    return saved.replace(resume=cfg.resume, epochs=cfg.epochs or saved.epochs,
                         progress=cfg.progress), run


def last_checkpoint(run: RunDir, log: Log, write: bool) -> Checkpoint | None:
    """The run's last checkpoint (or the one before it, when that one is damaged); None when
    there is none yet (killed before its first checkpoint: the run starts from the
    beginning). Only ``write`` touches files (rank 0)."""
    if write:
        for stale in run.last_checkpoint.parent.glob(".*.tmp"):  # writes cut short by a kill
            stale.unlink(missing_ok=True)
    if not (run.last_checkpoint.exists() or previous_path(run.last_checkpoint).exists()):
        log(f"{run.path}: no checkpoint yet; starting from the beginning")
        return None
    ckpt, used = load_latest(run.last_checkpoint)
    if used != run.last_checkpoint:
        log(f"warning: {run.last_checkpoint} is damaged; resuming from {used}")
    return ckpt


def is_complete(run: RunDir, ckpt: Checkpoint, epochs: int | None) -> bool:
    """Whether ``run``, resumed from ``ckpt`` to train ``epochs`` (None: its own plan), has
    nothing left to do: its training ended (the planned epochs done, or stopped early) and
    its final figures are written."""
    state = TrainState.from_dict(ckpt.meta["state"])
    planned = epochs or state.epochs or TrainConfig.from_yaml(run.config).epochs
    ended = state.epoch >= planned or (state.stop and not state.restart_lr_factor
                                        and epochs is None)
    return ended and state.batch == 0 and run.summary.exists()


@contextmanager
def resumable(run: RunDir) -> Iterator[None]:
    """Ctrl-C inside: a TrainingInterrupted that names the run folder, once it holds its
    config (from then on ``imgcls train --resume`` continues it, from its last checkpoint
    or, before the first, from the beginning)."""
    try:
        yield
    except KeyboardInterrupt as e:
        if isinstance(e, TrainingInterrupted) or not run.config.exists():
            raise
        raise TrainingInterrupted(run.path) from e
