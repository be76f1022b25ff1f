"""Numerical faults: a non-finite loss skips the step without a trace; repeated ones lower the
learning rate and finally stop the run with its checkpoint intact."""

import math

import pytest
import torch

import imgcls
from imgcls.engine.checkpoint import load_checkpoint
from imgcls.engine.trainer import Callback, TrainingDiverged

FAST = dict(data="digits", model="seed_torch_cnn", batch_size=64, precision="fp32",
            channels_last="no", progress=False, log=lambda _: None)


class PoisonSteps(Callback):
    """Makes the model output NaN for the steps in ``bad`` (by a forward hook), and records
    the full state (weights, BN statistics, optimizer) around them."""

    def __init__(self, bad):
        self.bad, self.handle, self.snapshots = set(bad), None, {}

    def _state(self, t):
        opt = [v.clone() for s in t.optimizer.state.values() for v in s.values()
               if torch.is_tensor(v)]
        return {k: v.clone() for k, v in t.model.state_dict().items()}, opt

    def on_train_start(self, t):
        self.on_step_end(t)

    def on_step_end(self, t):
        step = t.state.step  # the next step to run
        self.snapshots[step] = self._state(t)
        if step in self.bad and self.handle is None:
            self.handle = t.model.register_forward_hook(lambda m, i, o: o * float("nan"))
        elif step not in self.bad and self.handle is not None:
            self.handle.remove()
            self.handle = None


def test_skipped_steps_leave_no_trace_and_lower_the_lr(tmp_path):
    poison = PoisonSteps(range(5, 11))  # 6 bad steps in a row: one lr halving at 5
    r = imgcls.train(epochs=1, out=str(tmp_path), callbacks=[poison], **FAST)
    before, after = poison.snapshots[5], poison.snapshots[11]
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k  # weights and BatchNorm statistics
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1]))  # optimizer state
    state = load_checkpoint(r.path / "checkpoints" / "last.safetensors").meta["state"]
    assert state["skipped_steps"] == 6 and state["lr_factor"] == 0.5 and state["bad_steps"] == 0
    assert math.isfinite(r.history[0]["train_loss"]) and r.test["top1"] > 0.3


def test_persistent_nan_stops_with_the_checkpoint_intact(tmp_path):
    steps = 1437 * 9 // 10 // 64  # one epoch of digits' training part at batch 64
    poison = PoisonSteps(range(steps + 3, 10_000))  # from the 4th step of epoch 2 on
    with pytest.raises(TrainingDiverged, match="for 25 steps in a row"):
        imgcls.train(epochs=5, out=str(tmp_path), name="nan", callbacks=[poison], **FAST)
    ck = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.safetensors")
    first_bad = poison.snapshots[steps + 3][0]  # the weights before the first bad step
    assert ck.meta["state"]["epoch"] == 2 and ck.meta["state"]["bad_steps"] == 17
    assert all(torch.equal(ck.model[k], v) for k, v in first_bad.items())
    assert imgcls.load(tmp_path / "nan").model is not None
