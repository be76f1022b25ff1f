"""Training throughput of imgcls against its peers, same models and data, one invocation:

* the seed's PyTorch loop (section 4.2, benchmarks/seed_loop.py) vs imgcls on seed_torch_cnn;
* the seed's Keras code (section 4.1, benchmarks/keras_seed.py, run with --tf-python) vs
  imgcls on seed_keras_cnn;
* timm's train.py (benchmarks/timm_train.py, needs --timm-repo) vs imgcls on seed_torch_cnn.

All figures and ratios are appended as one row to benchmarks/peers_results.jsonl.

    python benchmarks/peers.py --epochs 3 --tf-python /work/tfvenv/bin/python \\
        --timm-repo /path/to/pytorch-image-models
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _record import append_row
from seed_loop import seed_loop

import imgcls

HERE = Path(__file__).parent


def imgcls_run(model: str, epochs: int) -> dict:
    r = imgcls.train(data="fashion-mnist", model=model, epochs=epochs, val_split=0.0,
                     out=str(HERE / "_work"), progress=False, log=lambda _: None)
    return {"images_per_s": statistics.median(h["train_images_per_s"] for h in r.history),
            "test_top1": r.test["top1"], "plan": r.plan.describe()}


def subprocess_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--tf-python", default=None, help="a Python that has tensorflow-cpu")
    p.add_argument("--timm-repo", default=None, help="a timm checkout holding train.py")
    args = p.parse_args()
    rows = {}
    rows["imgcls seed_torch_cnn"] = imgcls_run("seed_torch_cnn", args.epochs)
    rows["seed PyTorch loop"] = seed_loop(args.epochs)
    if args.timm_repo:
        rows["timm train.py seed_torch_cnn"] = subprocess_json(
            [sys.executable, "timm_train.py", "--timm-repo", args.timm_repo,
             "--epochs", str(args.epochs)])
    rows["imgcls seed_keras_cnn"] = imgcls_run("seed_keras_cnn", args.epochs)
    if args.tf_python:
        rows["Keras/TensorFlow seed code"] = subprocess_json(
            [args.tf_python, "keras_seed.py", "--epochs", str(args.epochs)])
    print(json.dumps(rows, indent=1))
    ours = {"seed PyTorch loop": "imgcls seed_torch_cnn",
            "timm train.py seed_torch_cnn": "imgcls seed_torch_cnn",
            "Keras/TensorFlow seed code": "imgcls seed_keras_cnn"}
    ratios = {}
    for peer, mine in ours.items():
        if peer in rows:
            a, b = rows[mine], rows[peer]
            ratios[peer] = a["images_per_s"] / b["images_per_s"]
            print(f"{mine} {a['images_per_s']:,.0f} img/s (test {a['test_top1']:.4f}) vs {peer} "
                  f"{b['images_per_s']:,.0f} img/s (test {b['test_top1']:.4f}): "
                  f"{ratios[peer]:.2f}x")
    append_row(HERE / "peers_results.jsonl", {"epochs": args.epochs, "runs": rows,
                                               "ratios": ratios})


if __name__ == "__main__":
    main()
