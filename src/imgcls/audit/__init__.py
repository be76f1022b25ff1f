"""``imgcls audit``: what is wrong with a run's data, one row per finding in
``RUN/audit/audit.csv`` (``file,issue,score,label,suggested,other_file``) and a section of
the run's report with thumbnails and Grad-CAM heatmaps. The audit reads the user's files
and never writes, moves or deletes one: it writes into the run folder only.

Issues, in the order the CSV lists them (by score, highest first, within each):

``leak``       an exact or near copy of an image in another split (train, val, test): it
               inflates every figure measured on that split. ``file`` is the copy in the
               earlier split (the one to drop, so that the held-out figures stay
               comparable), ``other_file`` the held-out one; score: 1 for exact copies, else
               the aligned correlation (0.998-1).
``duplicate``  the same within a split.
``label``      the given label is likely wrong; ``suggested`` is the likely one. Training
               images by the area under the margin recorded during training (score: how many
               logits the given label trails by on average), held-out images by the final
               model's confident disagreement (score: probability of the predicted class
               minus that of the given label).
``outlier``    unlike every class's training images (score: how many interquartile ranges
               its distance to the nearest training images of the nearest class lies beyond
               the upper quartile of the training images' own, above 3), or unreadable or
               near-blank (score inf).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import dataclass, field

import torch

from ..errors import RunError
from ..run import RunDir
from ..runtime.images import MAX_PIXELS
from ..runtime.preprocess import Preprocess, calibrated_softmax
from ..utils import Log, atomic_write_text, write_json
from .copies import find_copies
from .data import Part, RunData, run_data
from .labels import (
    TrainingMargins,
    held_out_label_issues,
    read_margins,
    training_label_issues,
)
from .outliers import FAR, near_blank, outlier_scores

ISSUES = ("leak", "duplicate", "label", "outlier")
COLUMNS = ("file", "issue", "score", "label", "suggested", "other_file")

__all__ = ["COLUMNS", "ISSUES", "AuditResult", "Finding", "audit"]


@dataclass(frozen=True)
class Finding:
    """One row of ``audit.csv``."""

    file: str
    issue: str
    score: float
    label: str
    suggested: str = ""
    other_file: str = ""
    split: str = ""  # the file's split (train, val, test), for the report


@dataclass
class AuditResult:
    run: RunDir
    findings: list[Finding]
    label_evidence: str  # "margins" or why there were none
    seconds: float
    files: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {i: sum(f.issue == i for f in self.findings) for i in ISSUES}

    def of(self, issue: str) -> list[Finding]:
        return [f for f in self.findings if f.issue == issue]


@dataclass
class _Pass:
    """The final model's outputs on every audited image, in the order of the parts."""

    logits: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor
    temperature: float


def audit(
    run: str | os.PathLike,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = 256,
    report: bool = True,
    max_pixels: int = MAX_PIXELS,
    log: Log = print,
) -> AuditResult:
    """Audit the data of the run folder ``run`` (its own data set; ``data`` / ``data_dir``
    where the files moved since training) and write ``RUN/audit/audit.csv``, its summary
    and, with ``report``, the report section. Needs a finished run; a run trained before
    margins were recorded is audited for copies and outliers, and its held-out images for
    labels, saying so (re-train it to check the training labels). Images of more than
    ``max_pixels`` are reported unreadable."""
    from ..evaluation import run_config
    from ..run import load_run_model
    from ..runtime.plan import resolve_device

    t0 = time.perf_counter()
    rd = RunDir.open(run)
    cfg = run_config(rd.path)
    if cfg is None:
        raise RunError(f"{rd.config}: missing; {rd.path} is not a run of imgcls train")
    device = resolve_device(device)
    model, pre, _ = load_run_model(rd.path, device)
    rundata = run_data(cfg, pre, data, data_dir, max_pixels)
    out = _model_pass(model, pre, rundata.parts, device, batch_size, max_pixels)
    findings = _copies(rundata.parts)
    labels, evidence = _label_findings(rd, rundata, out)
    findings += labels + _outliers(rundata, out)
    findings.sort(key=lambda f: (ISSUES.index(f.issue), -f.score, f.file))
    result = AuditResult(rd, findings, evidence, 0.0)
    rd.audit_dir.mkdir(exist_ok=True)
    atomic_write_text(rd.audit_csv, to_csv(findings))
    if report:
        from .report import write_audit_report

        result.files = write_audit_report(rd, result, rundata, out, model, pre, device)
    result.seconds = time.perf_counter() - t0
    write_json(
        rd.audit_summary,
        {
            "counts": result.counts(),
            "label_evidence": evidence,
            "images": sum(len(p.names) for p in rundata.parts),
            "seconds": result.seconds,
        },
    )
    log(
        f"audit of {rd.path}: "
        + ", ".join(f"{n} {i}" for i, n in result.counts().items())
        + f" ({result.seconds:.1f} s); {rd.audit_csv}"
    )
    if evidence != "margins":
        log(f"warning: {evidence}")
    return result


def to_csv(findings: list[Finding]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for f in findings:
        score = "inf" if math.isinf(f.score) else f"{f.score:.4f}"
        w.writerow([f.file, f.issue, score, f.label, f.suggested, f.other_file])
    return buf.getvalue()


def _model_pass(
    model: torch.nn.Module,
    pre: Preprocess,
    parts: list[Part],
    device: str,
    batch_size: int,
    max_pixels: int = MAX_PIXELS,
) -> _Pass:
    """Logits and pooled features of every image at the run's input size, one forward pass
    (fp32)."""
    from ..data.prepare import make_loader
    from ..runtime.forward import predict_outputs
    from ..runtime.plan import eval_plan

    plan = eval_plan(device)
    logits, feats, labels = [], [], []
    for p in parts:
        loader = make_loader(
            p.for_model, pre, train=False, batch_size=batch_size, **plan.placement,
            max_pixels=max_pixels,
        )
        lg, lb, ft = predict_outputs(model, loader, plan, features=True)
        logits.append(lg)
        labels.append(lb)
        feats.append(ft)
    return _Pass(torch.cat(logits), torch.cat(feats), torch.cat(labels), pre.temperature)


def _where(parts: list[Part]) -> list[tuple[Part, int]]:
    """(part, row) of each audited image, in the order of the model pass."""
    return [(p, i) for p in parts for i in range(len(p.names))]


def _copies(parts: list[Part]) -> list[Finding]:
    """``leak`` and ``duplicate`` rows: each pair once, ``file`` in the earlier split."""
    where = _where(parts)
    images = torch.cat([p.images.images for p in parts])
    rows = []
    for pair in find_copies(images):
        (pa, ia), (pb, ib) = where[pair.a], where[pair.b]
        issue = "duplicate" if pa.split == pb.split else "leak"
        rows.append(
            Finding(pa.names[ia], issue, pair.score, _label(pa, ia), "", pb.names[ib], pa.split)
        )
    return rows


def _label(p: Part, i: int) -> str:
    return p.images.classes[int(p.images.labels[i])]


def _label_findings(rd: RunDir, rundata: RunData, out: _Pass) -> tuple[list[Finding], str]:
    """``label`` rows: training images by their margins, held-out ones by the final model."""
    classes, rows, start = rundata.classes, [], 0
    evidence = "margins"
    for p in rundata.parts:
        n = len(p.names)
        if p.split == "train":
            issues, evidence = _training_issues(rd, p, len(classes))
        else:
            probs = calibrated_softmax(out.logits[start : start + n], out.temperature)
            issues = held_out_label_issues(probs, out.labels[start : start + n])
        rows += [
            Finding(
                p.names[i.index],
                "label",
                i.score,
                _label(p, i.index),
                classes[i.suggested] if i.suggested >= 0 else "",
                "",
                p.split,
            )
            for i in issues
        ]
        start += n
    return rows, evidence


def _training_issues(rd: RunDir, p: Part, classes: int) -> tuple[list, str]:
    if not rd.margins.exists():
        return [], (
            f"{rd.margins.name} is missing: {rd.path} was trained before imgcls "
            "recorded margins, so its training labels were not checked (train it "
            f"again, e.g. imgcls train --config {rd.config}, to check them)"
        )
    m = read_margins(rd.margins)
    if m.images == len(p.names):
        rows = torch.arange(len(p.names))  # trained in memory: the decoded images
    elif m.images == p.total:
        rows = p.rows  # streamed: every file of the split, unreadable ones included
    else:
        return [], (
            f"{rd.margins} holds {m.images} training images, the data now "
            f"{len(p.names)}: the data changed since training, so its training "
            "labels were not checked"
        )
    issues, _ = training_label_issues(
        TrainingMargins(m.margin[:, rows], m.runner_up[:, rows]), classes
    )
    return issues, "margins"


def _outliers(rundata: RunData, out: _Pass) -> list[Finding]:
    """``outlier`` rows: far from the training images' features, near-blank, unreadable."""
    where = _where(rundata.parts)
    is_train = torch.tensor([p.split == "train" for p, _ in where])
    rows = [Finding(name, "outlier", math.inf, label) for name, label, _ in rundata.unreadable]
    if not is_train.any():
        return rows
    scores = outlier_scores(out.features, is_train, out.labels)
    blank = near_blank(torch.cat([p.images.images for p in rundata.parts]))
    for k in torch.nonzero((scores > FAR) | blank).flatten().tolist():
        p, i = where[k]
        score = math.inf if blank[k] else float(scores[k])
        rows.append(Finding(p.names[i], "outlier", score, _label(p, i), "", "", p.split))
    return rows
