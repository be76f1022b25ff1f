"""An evaluation's report: one self-contained ``report.html`` (images embedded as data URIs)
in the evaluation's folder, and for the run's own data the run's ``report.html`` and
``model_card.md``."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

import torch
import yaml

from ..data.dataset import ArrayDataset, Dataset
from ..run import EvalDir, RunDir
from ..utils import atomic_write_text
from . import absent_note, plots


def write_report(run: RunDir, result: dict, ds: Dataset, probs: torch.Tensor,
                 out: EvalDir, run_report: bool = True) -> dict[str, str]:
    """Plots and ``report.html`` into ``out``, the evaluation's folder; with ``run_report``
    (an evaluation of the run's own data) the same report as the run's ``report.html``, and
    its ``model_card.md``. Returns the paths written: ``report`` is the evaluation's own."""
    names = [p["class"] for p in result["per_class"]]
    files: dict[str, Path] = {}
    records = run.read_metrics()
    if records:
        files["curves"] = plots.training_curves(records, out.plot("curves"))
    files["confusion"] = plots.confusion_plot(result["confusion"], names, out.plot("confusion"))
    cal = result["calibration"]
    scaled = cal["temperature"] != 1.0  # at T = 1 the scaled line would hide the other
    files["reliability"] = plots.reliability_plot(
        cal["bins_before"], cal["bins_after"] if scaled else None, out.plot("reliability"),
        (cal["ece_before"], cal["ece_after"] if scaled else None))
    files["per_class"] = plots.per_class_bars(result["per_class"], out.plot("per_class"))
    if isinstance(ds, ArrayDataset):
        files["errors"] = plots.error_grid(ds.images, ds.labels, probs, names,
                                           out.plot("errors"))
    page = _html(run, result, files)
    files["report"] = out.report
    atomic_write_text(files["report"], page)
    if run_report:
        files["run_report"], files["model_card"] = run.report, run.model_card
        atomic_write_text(run.report, page)
        atomic_write_text(run.model_card, _model_card(run, result))
    return {k: str(v) for k, v in files.items()}


def training_class_counts(run: RunDir, class_names: list[str]) -> list[int] | None:
    """Images per class in the run's training part, from its split manifest."""
    if not run.split.exists():
        return None
    counts = dict.fromkeys(class_names, 0)
    with open(run.split, newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == "train" and row["label"] in counts:
                counts[row["label"]] += 1
    return list(counts.values())


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}table{border-collapse:collapse;
margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;
border:1px solid #eee;margin:.5em 0}.kpi{display:inline-block;margin:0 2em 1em 0}
.kpi b{font-size:1.6em;display:block}pre{background:#f7f7f7;padding:1em;overflow:auto}"""


def _html(run: RunDir, r: dict, files: dict[str, Path]) -> str:
    cal = r["calibration"]
    cfg = yaml.safe_load(run.config.read_text()) if run.config.exists() else {}
    summary = json.loads(run.summary.read_text()) if run.summary.exists() else {}
    skipped = f", {len(r['skipped'])} unreadable skipped" if r["skipped"] else ""
    kpis = [("test top-1" if r["split"] == "test" else f"{r['split']} top-1", r["top1"]),
            ("top-5", r["top5"]), ("macro F1", r["macro"]["f1"]), ("loss", r["loss"]),
            ("ECE after scaling", cal["ece_after"])]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>imgcls report: "
        f"{html.escape(run.path.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(run.path.name)}</h1>",
        f"<p class='sub'>{html.escape(r['model'])} on {html.escape(r['data'])}, "
        f"{html.escape(r['split'])} split, {r['n']} images"
        f"{_tta_note(r['tta'])}{skipped}</p>",
        "<div>" + "".join(f"<span class='kpi'><b>{v:.4f}</b>{html.escape(k)}</span>"
                          for k, v in kpis) + "</div>",
    ]
    if absent_note(r):
        parts.append(f"<p>{html.escape(absent_note(r).capitalize())}.</p>")
    if "curves" in files:
        parts += ["<h2>Training</h2>", _img(files["curves"], "training curves")]
        if summary:
            parts.append(f"<p>best val top-1 {summary.get('best_val_top1', 0):.4f} at epoch "
                         f"{summary.get('best_epoch', 0)}; {summary.get('seconds', 0):.0f} s;"
                         f" execution plan {html.escape(str(summary.get('plan')))}</p>")
    names = [p["class"] for p in r["per_class"]]
    train_counts = training_class_counts(run, names)
    parts += ["<h2>Data</h2>", _table(
        ["class", "training images", f"{r['split']} images"],
        [[n, train_counts[i] if train_counts else "?", p["support"]]
         for i, (n, p) in enumerate(zip(names, r["per_class"]))])]
    parts += ["<h2>Per-class metrics</h2>", _table(
        ["class", "precision", "recall", "F1", "support"],
        [[p["class"], p["precision"], p["recall"], p["f1"], p["support"]]
         for p in r["per_class"]]
        + [["macro avg", r["macro"]["precision"], r["macro"]["recall"], r["macro"]["f1"], r["n"]],
           ["weighted avg", r["weighted"]["precision"], r["weighted"]["recall"],
            r["weighted"]["f1"], r["n"]]]),
        _img(files["per_class"], "per-class accuracy"),
        "<h2>Confusion matrix</h2>", _img(files["confusion"], "confusion matrix"),
        "<h3>Most confused pairs</h3>",
        _table(["true", "predicted as", "count", "share of true class"],
               [[m["true"], m["predicted"], m["count"], m["rate"]]
                for m in r["most_confused"]]),
        "<h2>Calibration</h2>",
        _table(["", "ECE", "NLL"],
               [["uncalibrated (T = 1)", cal["ece_before"], cal["nll_before"]],
                [f"temperature-scaled (T = {cal['temperature']:.3f})", cal["ece_after"],
                 cal["nll_after"]]]),
        _img(files["reliability"], "reliability diagram")]
    if "open_set" in r:
        o = r["open_set"]
        parts += ["<h2>Open-set answer</h2>", _table(
            ["score", "threshold", "coverage", "accuracy on answered", "rejected"],
            [[o["score"], o["threshold"], o["coverage"], o["accuracy_answered"],
              o["rejected"]]])]
    if "errors" in files:
        parts += ["<h2>Most confidently wrong</h2>", _img(files["errors"], "error grid")]
    if run.audit_section.exists():  # imgcls audit's findings and heatmaps
        parts.append(run.audit_section.read_text())
    parts += ["<h2>Configuration</h2>",
              f"<pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False))}</pre>",
              "</body></html>"]
    return "\n".join(parts)


def _model_card(run: RunDir, r: dict) -> str:
    cal = r["calibration"]
    cfg = yaml.safe_load(run.config.read_text()) if run.config.exists() else {}
    worst = sorted(r["per_class"], key=lambda p: p["f1"])[:3]
    lines = [
        f"# Model card: {run.path.name}",
        "",
        "## Model",
        f"- Architecture: `{r['model']}`; trained with imgcls "
        f"({cfg.get('epochs', '?')} epochs, {cfg.get('optimizer', '?')}, "
        f"{cfg.get('schedule', '?')} schedule).",
        "- `model.safetensors` carries its preprocessing (input size, channels, mean/std, "
        "class names, temperature).",
        "",
        "## Data",
        f"- Trained on `{cfg.get('data', r['data'])}`; evaluated on the {r['split']} split of "
        f"`{r['data']}` ({r['n']} images).",
        f"- Classes ({len(r['per_class'])}): {', '.join(p['class'] for p in r['per_class'])}.",
        "",
        "## Metrics",
        f"- Top-1 {r['top1']:.4f}, top-5 {r['top5']:.4f}, macro F1 {r['macro']['f1']:.4f}, "
        f"loss {r['loss']:.4f}.",
        "- Weakest classes (F1): " + ", ".join(f"{p['class']} {p['f1']:.3f}" for p in worst)
        + ".",
        "",
        "## Calibration",
        f"- Temperature {cal['temperature']:.3f} (fitted on the validation split): ECE "
        f"{cal['ece_before']:.4f} -> {cal['ece_after']:.4f}, NLL {cal['nll_before']:.4f} -> "
        f"{cal['nll_after']:.4f}. Predicted probabilities are temperature-scaled.",
        "",
        "## Intended use",
        "- Classifying images like those of the training data into the classes above.",
        "",
        "## Limits",
        "- The model only knows the classes above: anything else is forced into one of them "
        "unless an open-set threshold (`--reject-below`) is used.",
        "- Accuracy holds for images like the training data (size, framing, colour, "
        "source); it is not measured on anything else.",
        "- Metrics come from one evaluation split; small classes have wide uncertainty.",
    ]
    return "\n".join(lines) + "\n"


def _tta_note(tta: bool | str | None) -> str:
    """The report's words for the evaluation's TTA: True and "flip" are the flip views,
    "shift" the 10 views, False / None / "none" none."""
    mode = "flip" if tta is True else (tta or "none")
    return "" if mode == "none" else f", {mode} TTA"
