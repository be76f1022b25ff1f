"""The execution plan spends nothing on a precision the CPU cannot compute natively, says
why, and gives up early on a candidate that is hopelessly slow."""

import io

import pytest
import torch
from torch import nn

from imgcls.runtime import plan as precision
from imgcls.runtime.plan import ExecPlan, _cpu_candidates, _time_steps, native_bf16

AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.mark.parametrize("cpuinfo,native", [(AVX2, False), (AMX, True)])
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, cpuinfo, native):
    monkeypatch.setattr(precision, "open", lambda *a, **k: io.StringIO(cpuinfo), raising=False)
    monkeypatch.setattr(precision, "_onednn_bf16", lambda: True)
    ok, why = native_bf16.__wrapped__()
    assert ok is native
    assert ("amx_bf16" in why) if native else ("no bf16 instructions" in why)


def test_bf16_instructions_kept_from_torch_are_not_native(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 (say) keeps oneDNN from the CPU's bf16 instructions: the plan
    agrees with torch and does not try bf16."""
    monkeypatch.setattr(precision, "open", lambda *a, **k: io.StringIO(AMX), raising=False)
    monkeypatch.setattr(precision, "_onednn_bf16", lambda: False)
    ok, why = native_bf16.__wrapped__()
    assert not ok and "amx_bf16" in why and "limited to" in why


def test_auto_tries_bf16_only_where_it_is_native(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: (False, "no bf16 instructions"))
    plans = _cpu_candidates("cpu", "auto", "auto")
    assert {p.precision for p in plans} == {"fp32"} and len(plans) == 2  # NCHW, channels_last
    assert "no bf16 instructions" in ExecPlan().explain({"fp32": 0.1}, "auto")
    assert "bf16" not in ExecPlan().explain({"fp32": 0.1}, "fp32")  # asked for: no note
    assert [p.precision for p in _cpu_candidates("cpu", "bf16", "yes")] == ["bf16"]
    monkeypatch.setattr(precision, "native_bf16", lambda: (True, "the CPU has amx_bf16"))
    assert "bf16" in {p.precision for p in _cpu_candidates("cpu", "auto", "auto")}


def test_a_hopeless_candidate_is_not_timed_further(monkeypatch):
    calls = []

    class Counted(nn.Linear):
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    _time_steps(Counted(3, 2), ExecPlan(), x, y, steps=3)
    assert len(calls) == 5  # two warm-up steps and three timed ones
    calls.clear()
    monkeypatch.setattr(precision, "TRIAL_LIMIT_S", 0.0)
    assert _time_steps(Counted(3, 2), ExecPlan(), x, y, steps=3) > 0
    assert len(calls) == 1  # its first step alone was over the limit


def test_plan_timings_are_kept_apart_per_kernel_set(tmp_path, monkeypatch):
    """Timings measured with torch kept to AVX2 kernels (or under another capability) are not
    reused on the same CPU without the limit, nor the other way round."""
    monkeypatch.setenv("IMGCLS_HOME", str(tmp_path))
    for var in precision._KERNEL_LIMITS:
        monkeypatch.delenv(var, raising=False)
    measured = []

    def timings():
        return precision._cached_timings("train", "m", nn.Linear(3, 2), (4, 3), [ExecPlan()],
                                         lambda c: measured.append(c) or 0.1)

    timings()
    timings()
    assert len(measured) == 1  # cached
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    timings()
    assert len(measured) == 2
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    timings()
    assert len(measured) == 3
