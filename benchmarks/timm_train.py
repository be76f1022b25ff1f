"""timm's own train.py on the seed CNNs and Fashion-MNIST, for the peer benchmark.

The imgcls models are registered into timm's registry under their names, train.py is
imported from a checkout of timm (never copied into this project) and its
``train_one_epoch`` is wrapped to time each epoch. The data are written once as PNG files in
an ImageFolder layout, which is what train.py reads. Prints one JSON line, which peers.py
records.

    python benchmarks/timm_train.py --timm-repo PATH --model seed_torch_cnn --epochs 3
"""

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types
from pathlib import Path

from PIL import Image

import imgcls
from imgcls.data.sources import load_source

WORK = Path(__file__).parent / "_work"


def write_png_folder(root: Path) -> Path:
    if (root / "done").exists():
        return root
    src = load_source("fashion-mnist")
    for split, ds in (("train", src.train), ("validation", src.test)):
        for i, (img, y) in enumerate(zip(ds.images, ds.labels.tolist())):
            d = root / split / f"{y}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0].numpy(), "L").save(d / f"{i}.png")
    (root / "done").write_text("ok")
    return root


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--timm-repo", required=True, help="a timm checkout holding train.py")
    p.add_argument("--model", default="seed_torch_cnn")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    data = write_png_folder(WORK / "fmnist_png")

    import timm.models._registry as reg

    def builder(pretrained=False, num_classes=10, in_chans=1, **kw):  # timm's keywords
        return imgcls.create_model(args.model, num_classes=num_classes, channels=in_chans,
                                   image_size=28)
    builder.__name__ = args.model
    # timm's registry files each model under the module that defines it
    module = types.ModuleType("timm.models.imgcls_bench")
    module.__all__ = []
    sys.modules[module.__name__] = module
    builder.__module__ = module.__name__
    reg.register_model(builder)

    spec = importlib.util.spec_from_file_location("timm_train_script",
                                                  Path(args.timm_repo) / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    rates, original = [], train.train_one_epoch

    def timed(*a, **kw):
        t = time.perf_counter()
        out = original(*a, **kw)
        rates.append(60000 / (time.perf_counter() - t))
        return out
    train.train_one_epoch = timed
    out = WORK / "timm_out"
    sys.argv = ["train.py", "--data-dir", str(data), "--model", args.model,
                "--num-classes", "10", "--in-chans", "1", "--input-size", "1", "28", "28",
                "--mean", "0.2860", "--std", "0.3530", "--crop-pct", "1.0",
                "--scale", "1.0", "1.0", "--ratio", "1.0", "1.0", "--interpolation", "bilinear",
                "--train-interpolation", "bilinear", "--hflip", "0.5",
                "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                "--workers", str(args.workers), "--opt", "sgd", "--lr", "0.1",
                "--sched", "cosine", "--warmup-epochs", "0", "--smoothing", "0.1",
                "--log-interval", "1000", "--output", str(out), "--experiment", args.model,
                "--checkpoint-hist", "1", "--no-prefetcher", "--device", "cpu"]
    train.main()
    summary = (out / args.model / "summary.csv").read_text().splitlines()
    last = dict(zip(summary[0].split(","), summary[-1].split(",")))
    print(json.dumps({"images_per_s": statistics.median(rates),
                      "test_top1": float(last["eval_top1"]) / 100}))


if __name__ == "__main__":
    main()
