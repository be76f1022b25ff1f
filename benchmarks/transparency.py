"""What transparent pixels are composited over, measured side by side. The rules (each a
function of the RGBA image giving the gray level of its background):

    black          0 for every image (imgcls's rule before this comparison)
    white          255 for every image
    opposite-gray  255 minus the mean brightness of the opaque pixels (gray under mid tones)
    max-contrast   black or white, whichever is further from the opaque pixels' brightness
    imgcls         the rule in imgcls.runtime.images.background_level: black, brightening to
                   white as the opaque pixels darken below a quarter of white

Each is trained for the same fixed epochs, seeds, batch and learning rate on the suite's
transparent sets (lineart: black line art; icons: colour icons, cut-outs on transparency)
and scored on their held-out folders; one row per run appended to
benchmarks/transparency.jsonl.

    python benchmarks/suite_data.py --only lineart    # and icons: the folders, once
    python benchmarks/transparency.py                  # every rule, lineart and icons, 2 seeds
    python benchmarks/transparency.py --rules black,imgcls --sets lineart --seeds 0

The rule is swapped in this process (imgcls.runtime.images.background_level) and every run
decodes into a cache folder of its own, so the variants differ in nothing else.
"""

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from _record import append_row

import imgcls
from imgcls.runtime import images

HERE = Path(__file__).parent
ROOT = Path(os.environ.get("IMGCLS_SUITE", Path.home() / ".cache" / "imgcls" / "suite"))


def _luma(rgba: object) -> float:
    luma = images.foreground_luma(rgba)
    return 0.0 if luma is None else luma


RULES = {
    "black": lambda rgba: 0,
    "white": lambda rgba: 255,
    "opposite-gray": lambda rgba: round(255 - _luma(rgba)),
    "max-contrast": lambda rgba: 255 if _luma(rgba) < 127.5 else 0,
    "imgcls": images.background_level,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="lineart,icons")
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=15)
    a = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="transparency-"))
    for name in a.sets.split(","):
        scores: dict[str, list[float]] = {r: [] for r in a.rules.split(",")}
        for seed in map(int, a.seeds.split(",")):
            for rule in scores:  # in turns, so a machine slowing down hits every variant
                images.background_level = RULES[rule]
                os.environ["IMGCLS_HOME"] = str(out / f"home-{name}-{rule}-{seed}")
                # batch and learning rate given (the defaults' values for these sets), so
                # that no variant is restarted at a lower rate by the learning check
                r = imgcls.train(data=str(ROOT / name), epochs=a.epochs, seed=seed,
                                 batch_size=16, lr=0.0125, out=str(out),
                                 name=f"{name}-{rule}-{seed}", progress=False,
                                 log=lambda _: None)
                ev = imgcls.evaluate(r.path, str(ROOT / f"{name}-test"), report=False,
                                     calibrate=False, log=lambda _: None)
                scores[rule].append(ev["top1"])
                row = append_row(HERE / "transparency.jsonl", {
                    "set": name, "rule": rule, "seed": seed, "epochs": a.epochs,
                    "batch_size": 16, "lr": 0.0125, "top1": ev["top1"], "n": ev["n"]})
                print(json.dumps({k: row[k] for k in ("set", "rule", "seed", "top1")}),
                      flush=True)
        print(name, {r: round(statistics.mean(s), 4) for r, s in scores.items()}, flush=True)


if __name__ == "__main__":
    main()
