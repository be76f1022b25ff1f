"""Which class-activation heatmap explains imgcls models best: deletion and insertion curves
(Petsiuk et al. 2018, RISE) of each method's heatmaps on held-out images of real data.

Methods (heat for the predicted class c):

    gradcam     Grad-CAM (Selvaraju et al. 2017), imgcls.explain.grad_cam
    gradcam++   Grad-CAM++ (Chattopadhay et al. 2018): per-position weights of the gradients
    scorecam    Score-CAM (Wang et al. 2020): each feature channel, upsampled and scaled to
                [0, 1], masks the input; its weight is the gain in p(c) over the mean image
    occlusion   a sliding square patch (a sixth of the side, stride half of it) set to the
                mean image; heat is the mean drop of p(c) over the patches covering a pixel
    saliency    |dy_c / dx|, largest over the channels (Simonyan et al. 2014)
    random      uniform noise: the floor every method should clear

Metric: the pixels are removed in order of heat (ties in a fixed random order) in 32 equal
steps, each replaced by the baseline image, and the calibrated probability of c is recorded
after each step; deletion's area under that curve (lower is better) and insertion's, which
starts from the baseline and puts the pixels back in the same order (higher is better).
Two baselines: the image blurred (Gaussian, sigma a tenth of the side) and the training
set's mean (0 after normalisation). Each method's time per image is its own call's, on
batches of 32. Data: a Fashion-MNIST subset, the embedded ``sample`` set and the suite's
RGB ``icons`` folder at 64 px (when present), each with ``fastnet_s`` and ``resnet_mini``.

    python benchmarks/explain.py                          # train the runs, measure, record
    python benchmarks/explain.py --runs /tmp/explain-runs  # reuse runs trained there before
    python benchmarks/explain.py --table                   # medians of the latest rows

Rows go to benchmarks/explain_results.jsonl (one per set, model and baseline).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _record import append_row

import imgcls
from imgcls.data.sources import Source, load_source
from imgcls.explain import grad_cam
from imgcls.run import load_run_model

HERE = Path(__file__).parent
RESULTS = HERE / "explain_results.jsonl"
SUITE = Path(os.environ.get("IMGCLS_SUITE", Path.home() / ".cache" / "imgcls" / "suite"))
METHODS = ("gradcam", "gradcam++", "scorecam", "occlusion", "saliency", "random")
STEPS = 32


# ----------------------------------------------------------------------------- methods
def _features(model, x, target):
    """(feature map, its gradient, logits) for the target classes (default: predictions)."""
    with torch.enable_grad():
        fm = model.forward_features(x.detach())
        logits = model.forward_head(fm)
        target = logits.argmax(1) if target is None else target
        (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), fm)
    return fm.detach(), grad, logits.detach(), target


def _finish(cam, size):
    """Positive part, scaled to a peak of 1, upsampled to the input's size."""
    cam = F.relu(cam)
    cam = cam / cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def gradcam_pp(model, x, target=None):
    """Grad-CAM++ with the exponential of the class score (the paper's closed form):
    alpha = g^2 / (2 g^2 + sum_ab A_ab g^3), channel weight sum_ij alpha relu(g)."""
    fm, g, _, _ = _features(model, x, target)
    g2 = g * g
    denom = 2 * g2 + fm.sum((2, 3), keepdim=True) * g2 * g
    alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0)
    weights = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    return _finish((weights * fm).sum(1), x.shape[-2:])


def check_gradcam_pp():
    """Grad-CAM++ on a global-average-pooled linear head has a closed form: channel weights
    relu(w_ck) / (2 + w_ck mean_ij A_kij). Raises if the implementation departs from it."""
    from imgcls.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet_mini", num_classes=5, channels=1, image_size=16).eval()
    x, target = torch.randn(3, 1, 16, 16), torch.tensor([0, 3, 4])
    with torch.no_grad():
        fm = model.forward_features(x)
        w = model.head.fc.weight[target]
        weights = F.relu(w) / (2 + w * fm.mean((2, 3)))
        ref = _finish((weights[:, :, None, None] * fm).sum(1), x.shape[-2:])
    err = float((gradcam_pp(model, x, target) - ref).abs().max())
    if err > 1e-5:
        raise AssertionError(f"Grad-CAM++ departs from its closed form by {err}")


def _probs(model, pre, x, c, batch=256):
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(pre.probabilities(model(x[s : s + batch]))[:, c])
    return torch.cat(out)


def score_cam(model, pre, x, target=None):
    with torch.no_grad():
        fm = model.forward_features(x)
        c_all = model.forward_head(fm).argmax(1) if target is None else target
    cams = []
    for i in range(len(x)):
        c = int(c_all[i])
        m = F.interpolate(fm[i][:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
        lo = m.flatten(1).min(1).values[:, None, None, None]
        hi = m.flatten(1).max(1).values[:, None, None, None]
        m = torch.where(hi > lo, (m - lo) / (hi - lo).clamp_min(1e-12), 0)
        base = _probs(model, pre, torch.zeros_like(x[i : i + 1]), c)
        gain = _probs(model, pre, x[i : i + 1] * m, c) - base
        cams.append((gain[:, None, None] * fm[i]).sum(0))
    return _finish(torch.stack(cams), x.shape[-2:])


def occlusion(model, pre, x, target=None):
    size = x.shape[-1]
    patch = max(3, round(size / 6))
    n = math.ceil((size - patch) / max(1, patch // 2)) + 1
    starts = torch.linspace(0, size - patch, n).round().long().tolist()
    boxes = [(a, b) for a in starts for b in starts]
    masks = torch.ones(len(boxes), 1, size, size)
    for k, (a, b) in enumerate(boxes):
        masks[k, :, a : a + patch, b : b + patch] = 0
    cover = (1 - masks).sum(0)[0].clamp_min(1)
    with torch.no_grad():
        c_all = model(x).argmax(1) if target is None else target
    cams = []
    for i in range(len(x)):
        c = int(c_all[i])
        drop = _probs(model, pre, x[i : i + 1], c) - _probs(model, pre, x[i : i + 1] * masks, c)
        cams.append((drop[:, None, None] * (1 - masks[:, 0])).sum(0) / cover)
    cams = F.relu(torch.stack(cams))
    return cams / cams.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]


def saliency(model, x, target=None):
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        target = logits.argmax(1) if target is None else target
        (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), xg)
    return g.abs().amax(1)


def heatmaps(method, model, pre, x, seed=0):
    if method == "gradcam":
        return grad_cam(model, x)[0]
    if method == "gradcam++":
        return gradcam_pp(model, x)
    if method == "scorecam":
        return score_cam(model, pre, x)
    if method == "occlusion":
        return occlusion(model, pre, x)
    if method == "saliency":
        return saliency(model, x)
    g = torch.Generator().manual_seed(seed)
    return torch.rand(x.shape[0], *x.shape[-2:], generator=g)


# ----------------------------------------------------------------------------- metric
def blurred(x):
    """Gaussian blur, sigma a tenth of the side, reflected edges (two 1-D convolutions)."""
    size = x.shape[-1]
    sigma = size / 10
    r = min(size - 1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).repeat(x.shape[1], 1, 1, 1)
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(-1, 1, 1, 2 * r + 1),
                 groups=x.shape[1])
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(-1, 1, 2 * r + 1, 1),
                    groups=x.shape[1])


def curves(model, pre, x, heat, c, base, tie):
    """(deletion AUC, insertion AUC) of one image (C, H, W) and its heatmap (H, W)."""
    hw = heat.numel()
    flat = heat.flatten()[tie]
    order = tie[torch.argsort(-flat, stable=True)]
    rank = torch.empty(hw, dtype=torch.long)
    rank[order] = torch.arange(hw)
    counts = torch.linspace(0, hw, STEPS + 1).round().long()
    mask = (rank[None] < counts[:, None]).view(STEPS + 1, 1, *heat.shape)
    deleted = torch.where(mask, base[None], x[None])
    inserted = torch.where(mask, x[None], base[None])
    p = _probs(model, pre, torch.cat([deleted, inserted]), c)
    auc = [float(np.trapezoid(q.numpy(), dx=1 / STEPS)) for q in (p[: STEPS + 1], p[STEPS + 1 :])]
    return auc[0], auc[1]


# ----------------------------------------------------------------------------- data, runs
def test_images(name, pre, n, seed=0):
    """A fixed random draw of n held-out images, uint8 (N, C, S, S) at the run's size, and
    their labels."""
    if name in ("fashion", "sample"):
        part = load_source("fashion-mnist" if name == "fashion" else "sample").test
        images = part.images
    else:
        part = load_source(str(SUITE / f"{name}-test")).train
        images = pre.load_images(part.paths)
    idx = torch.from_numpy(np.random.default_rng(seed).permutation(len(images))[:n])
    return pre.prepare(images[idx]), part.labels[idx]


def get_run(name, model, args):
    """The run folder of (set, model): reused when --runs holds a finished one."""
    folder = Path(args.runs) / f"{name}-{model}"
    if (folder / "model.safetensors").exists():
        return folder, None
    kw = dict(model=model, epochs=args.epochs, seed=0, threads=args.threads, out=args.runs,
              name=f"{name}-{model}", progress=False, log=lambda _: None)
    t0 = time.perf_counter()
    if name == "fashion":
        src = load_source("fashion-mnist")
        keep = np.sort(np.random.default_rng(0).permutation(len(src.train))[: args.train])
        r = imgcls.train(source=Source("fashion-mnist", src.train.subset(keep), src.test),
                         data="fashion-mnist", **kw)
    elif name == "sample":
        r = imgcls.train(data="sample", **kw)
    else:
        kw["epochs"] = args.rgb_epochs
        r = imgcls.train(data=str(SUITE / name), image_size=64, **kw)
    return Path(r.path), time.perf_counter() - t0


def measure(name, model_name, args):
    run, train_s = get_run(name, model_name, args)
    model, pre, _ = load_run_model(run)
    x, labels = test_images(name, pre, args.rgb_images if name == "icons" else args.images)
    with torch.no_grad():
        logits = torch.cat([model(x[s : s + 256]) for s in range(0, len(x), 256)])
    pred = logits.argmax(1)
    rows = {b: {"set": name, "model": model_name, "baseline": b, "images": len(x),
                "size": x.shape[-1], "epochs": args.epochs if name != "icons" else args.rgb_epochs,
                "train_s": train_s, "run": str(run), "steps": STEPS, "methods": {}}
            for b in ("blur", "mean")}
    for r in rows.values():
        r["fmap"] = list(model.forward_features(x[:1]).shape[-2:])
        r["top1"] = float((pred == labels).float().mean())
    bases = {"blur": blurred(x), "mean": torch.zeros_like(x)}
    tie = torch.from_numpy(np.random.default_rng(1).permutation(x.shape[-1] * x.shape[-2]))
    for method in args.methods.split(","):
        heat, spent = [], 0.0
        for s in range(0, len(x), 32):
            t0 = time.perf_counter()
            heat.append(heatmaps(method, model, pre, x[s : s + 32], seed=s))
            spent += time.perf_counter() - t0
        heat = torch.cat(heat)
        for b, base in bases.items():
            dele, ins = zip(*(curves(model, pre, x[i], heat[i], int(pred[i]), base[i], tie)
                              for i in range(len(x))))
            rows[b]["methods"][method] = {"deletion": [round(v, 5) for v in dele],
                                          "insertion": [round(v, 5) for v in ins],
                                          "s_per_image": spent / len(x)}
        print(f"{name} {model_name} {method}: {spent / len(x) * 1000:.1f} ms/image, deletion "
              f"{statistics.median(rows['blur']['methods'][method]['deletion']):.3f} "
              f"insertion {statistics.median(rows['blur']['methods'][method]['insertion']):.3f}"
              " (blur)", flush=True)
    return list(rows.values())


# ----------------------------------------------------------------------------- summary
def summary(row):
    """Per method: medians, and the share of images on which gradcam does better (paired)."""
    out = {}
    ref = row["methods"].get("gradcam")
    for m, v in row["methods"].items():
        s = {"deletion": statistics.median(v["deletion"]),
             "insertion": statistics.median(v["insertion"]), "ms": 1000 * v["s_per_image"]}
        if ref is not None and m != "gradcam":
            d = np.array(v["deletion"]) < np.array(ref["deletion"])
            i = np.array(v["insertion"]) > np.array(ref["insertion"])
            s["beats_gradcam_deletion"], s["beats_gradcam_insertion"] = d.mean(), i.mean()
        out[m] = s
    return out


def table(path=RESULTS):
    latest = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        latest[(r["set"], r["model"], r["baseline"])] = r
    print("| set | model | baseline | method | deletion | insertion | beats Grad-CAM "
          "(del / ins) | ms / image |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, model, base), r in latest.items():
        for m, s in summary(r).items():
            paired = (f"{s['beats_gradcam_deletion']:.0%} / {s['beats_gradcam_insertion']:.0%}"
                      if "beats_gradcam_deletion" in s else "-")
            print(f"| {name} | {model} | {base} | {m} | {s['deletion']:.3f} | "
                  f"{s['insertion']:.3f} | {paired} | {s['ms']:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="fashion,sample,icons")
    ap.add_argument("--models", default="fastnet_s,resnet_mini")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--images", type=int, default=300, help="held-out images per grey set")
    ap.add_argument("--rgb-images", type=int, default=150, help="held-out images of icons")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the grey sets' runs")
    ap.add_argument("--rgb-epochs", type=int, default=15, help="epochs of the icons runs")
    ap.add_argument("--train", type=int, default=10000, help="Fashion-MNIST training images")
    ap.add_argument("--runs", default="/tmp/explain-runs",
                    help="run folders; a finished one of the same set and model is reused")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--results", default=str(RESULTS), help="the JSON-lines file of the rows")
    ap.add_argument("--table", action="store_true", help="only print the latest rows' medians")
    args = ap.parse_args()
    if args.table:
        table(args.results)
        return 0
    torch.set_num_threads(args.threads)
    check_gradcam_pp()
    for name in args.sets.split(","):
        if name == "icons" and not (SUITE / "icons-test").is_dir():
            print(f"no {SUITE / 'icons-test'}: icons skipped", flush=True)
            continue
        for model in args.models.split(","):
            for row in measure(name, model, args):
                full = append_row(args.results, row)
                print(json.dumps({"set": name, "model": model, "baseline": row["baseline"],
                                  "summary": summary(full)}, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
