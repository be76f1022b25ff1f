"""Every family trained on Fashion-MNIST with `imgcls train` under the same time budget.

Results are appended to benchmarks/zoo_results.jsonl as each model finishes (so a stopped
run keeps what it measured) and benchmarks/zoo.md is rewritten from them.

    python benchmarks/zoo.py --budget 5m [--models resnet20,mobilenet_v2]
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from _record import append_row

import imgcls
from imgcls.config import TrainConfig
from imgcls.engine.precision import cpu_name

HERE = Path(__file__).parent
RESULTS = HERE / "zoo_results.jsonl"
# The public Fashion-MNIST benchmark table (zalandoresearch/fashion-mnist README).
PUBLIC = {"vgg": ("VGG16", 0.935), "inception": ("GoogLeNet", 0.937),
          "resnet": ("ResNet18", 0.949), "mobilenet": ("MobileNet", 0.950),
          "densenet": ("DenseNet-BC 768K", 0.954), "squeezenet": ("SqueezeNet", 0.900),
          "xception": ("-", None), "seed": ("2 Conv <100K", 0.925)}
DEFAULT = ("seed_torch_cnn,resnet20,mobilenet_v2,squeezenet1_1,densenet_bc_100,resnet18,"
           "vgg16_bn,googlenet,xception")


def write_table():
    latest = {}  # the last measurement of each model, in the order models first appeared
    for line in RESULTS.read_text().splitlines():
        if line:
            r = json.loads(line)
            latest[r["model"]] = r
    rows = list(latest.values())
    lines = [
        "# Model zoo on Fashion-MNIST",
        "",
        "Each model trained with `imgcls train --data fashion-mnist --model NAME --budget B`",
        "(defaults otherwise: SGD one-cycle, flip augmentation below 20 epochs, flip TTA at",
        "test, automatic fp32/bf16 plan), 54,000 training images, test on the official 10,000.",
        "Produced by `python benchmarks/zoo.py`; the public figures come from the Fashion-MNIST",
        "benchmark table and used far longer training.",
        "",
        "| family | model | params (M) | budget | epochs | wall (s) | img/s | plan | test top-1 "
        "| public table |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref_name, ref = PUBLIC.get(r["family"], ("-", None))
        lines.append(
            f"| {r['family']} | {r['model']} | {r['params'] / 1e6:.2f} | {r['budget']} | "
            f"{r['epochs']} | {r['wall_s']:.0f} | {r['images_per_s']:,.0f} | {r['plan']} | "
            f"**{r['test_top1']:.4f}** | {ref_name} {ref if ref else ''} |")
    if rows:
        lines += ["", f"Machine: {rows[-1]['machine']}."]
    (HERE / "zoo.md").write_text("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--budget", default="5m")
    p.add_argument("--models", default=DEFAULT)
    args = p.parse_args()
    for name in args.models.split(","):
        t = time.perf_counter()
        r = imgcls.train(data="fashion-mnist", model=name, budget=args.budget,
                         out=str(HERE / "_work"), progress=False, log=lambda _: None)
        info = imgcls.models.model_info(name)
        params = sum(p.numel() for p in imgcls.load(r.path, device="cpu").model.parameters())
        fraction = TrainConfig.from_yaml(r.path / "config.yaml").train_fraction
        rec = {"family": info.family, "model": name, "params": params, "budget": args.budget,
               "epochs": round(len(r.history) * fraction, 2), "wall_s": time.perf_counter() - t,
               "images_per_s": sorted(h["train_images_per_s"] for h in r.history)[
                   len(r.history) // 2],
               "plan": r.plan.describe(), "test_top1": r.test["top1"],
               "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, "
                          f"torch {torch.__version__}, {platform.python_version()}"}
        print(json.dumps(append_row(RESULTS, rec)), flush=True)
        write_table()


if __name__ == "__main__":
    main()
