"""Training steps with glibc's default malloc against imgcls's setting (keep freed memory).

One process per measurement, the two settings in turns (the machine's speed drifts):

    python benchmarks/malloc.py [--models fastnet_m,fastnet_s] [--pairs 3]

Each process times 20 training steps of batch 256 on 28 px grayscale in bf16 +
channels_last and reports the median step, its kernel (sys) time and minor page faults. Each
pair is appended as a row to benchmarks/malloc_results.jsonl.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _record import append_row

RESULTS = Path(__file__).parent / "malloc_results.jsonl"

STEPS = """
import json, resource, sys, time, statistics, torch, torch.nn.functional as F
from imgcls.runtime.plan import ExecPlan, keep_freed_memory
from imgcls.models import create_model
if sys.argv[2] == "keep":
    assert keep_freed_memory()
plan = ExecPlan("cpu", "bf16", True)
m = plan.prepare(create_model(sys.argv[1], num_classes=10, channels=1, image_size=28)).train()
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
x = plan.prepare_input(torch.randn(256, 1, 28, 28))
y = torch.randint(0, 10, (256,))
def step():
    with plan.autocast():
        loss = F.cross_entropy(m(x).float(), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(3):
    step()
r0, times = resource.getrusage(resource.RUSAGE_SELF), []
for _ in range(20):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"ms": 1000 * statistics.median(times), "sys_s": r1.ru_stime - r0.ru_stime,
                  "faults": r1.ru_minflt - r0.ru_minflt}))
"""


def measure(model: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", STEPS, model, mode], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="fastnet_m,fastnet_s")
    p.add_argument("--pairs", type=int, default=3)
    a = p.parse_args()
    ratios = []
    print("| net | glibc default ms/step | keep freed memory ms/step | ratio | page faults "
          "(default / keep) |\n|---|---|---|---|---|")
    for model in a.models.split(","):
        for _ in range(a.pairs):
            plain, keep = measure(model, "plain"), measure(model, "keep")
            ratios.append(plain["ms"] / keep["ms"])
            append_row(RESULTS, {"model": model, "default": plain, "keep": keep,
                                 "ratio": ratios[-1]})
            print(f"| {model} | {plain['ms']:.0f} | {keep['ms']:.0f} | {ratios[-1]:.2f} | "
                  f"{plain['faults']:,} / {keep['faults']:,} |", flush=True)
    print(f"median ratio {statistics.median(ratios):.2f} over {len(ratios)} pairs")


if __name__ == "__main__":
    main()
