"""The audit's part of the report: thumbnails of the findings (pairs side by side) and
Grad-CAM heatmaps of the most confidently wrong held-out images and of a few typical ones
per class. Written as ``RUN/audit/section.html`` (which the run's ``report.html`` includes,
now and whenever ``imgcls eval`` writes it again) and as a page of its own,
``RUN/audit/report.html``."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..explain import grad_cam, overlay
from ..run import RunDir
from ..runtime.preprocess import Preprocess, calibrated_softmax
from ..utils import atomic_write_text

if TYPE_CHECKING:
    from . import AuditResult, _Pass
    from .data import RunData

PER_ISSUE = 24  # thumbnails shown per issue (the CSV has every finding)
WRONG, TYPICAL = 12, 2  # Grad-CAM: most confidently wrong, typical per class (<= 10 classes)
START, END = "<!-- imgcls audit -->", "<!-- /imgcls audit -->"
CSS = """.cards{display:flex;flex-wrap:wrap;gap:8px}.card{width:150px;font-size:11px;
word-break:break-all}.card img{width:64px;height:64px;image-rendering:pixelated;margin:0}
.card img.cam{width:140px;height:140px}"""


def _uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _rgb(image: torch.Tensor) -> np.ndarray:
    img = image if image.shape[0] == 3 else image.expand(3, -1, -1)
    return img.permute(1, 2, 0).contiguous().numpy()


def _card(images: list[torch.Tensor], lines: list[str], cls: str = "") -> str:
    imgs = "".join(
        f'<img class="{cls}" alt="" src="{_uri(i)}">'
        if isinstance(i, np.ndarray)
        else f'<img alt="" src="{_uri(_rgb(i))}">'
        for i in images
    )
    text = "<br>".join(html.escape(line) for line in lines)
    return f'<div class="card">{imgs}<br>{text}</div>'


def _findings_html(result: AuditResult, lookup: dict[str, torch.Tensor]) -> list[str]:
    parts = []
    for issue in ("leak", "duplicate", "label", "outlier"):
        rows = result.of(issue)
        parts.append(f"<h3>{issue}: {len(rows)}</h3>")
        cards = []
        for f in rows[:PER_ISSUE]:
            imgs = [lookup[n] for n in (f.file, f.other_file) if n in lookup]
            score = "inf" if math.isinf(f.score) else f"{f.score:.3f}"
            lines = [
                f.file,
                f"{f.label}" + (f" -> {f.suggested}" if f.suggested else ""),
                f"score {score}",
            ] + ([f"= {f.other_file}"] if f.other_file else [])
            cards.append(_card(imgs, lines))
        if cards:
            parts.append(f'<div class="cards">{"".join(cards)}</div>')
        if len(rows) > PER_ISSUE:
            parts.append(f"<p>... and {len(rows) - PER_ISSUE} more in audit.csv</p>")
    return parts


def _cam_picks(rundata: RunData, out: _Pass) -> tuple[list[int], list[int], str]:
    """(most confidently wrong, typical per class) indices into the model pass, of the test
    split (else val, else train), and that split's name."""
    start, chosen = 0, None
    for p in rundata.parts:
        if p.split in ("test", "val") and (chosen is None or p.split == "test"):
            chosen = (p, start)
        start += len(p.names)
    p, start = chosen or (rundata.parts[0], 0)
    n = len(p.names)
    probs = calibrated_softmax(out.logits[start : start + n], out.temperature)
    conf, pred = probs.max(1)
    labels = out.labels[start : start + n]
    wrong = torch.nonzero(pred != labels).flatten()
    wrong = wrong[conf[wrong].argsort(descending=True)][:WRONG]
    typical = []
    for c in range(min(len(rundata.classes), 10)):
        right = torch.nonzero((pred == labels) & (labels == c)).flatten()
        order = right[conf[right].argsort()]
        mid = len(order) // 2  # around the median confidence: neither easy nor borderline
        typical += order[max(0, mid - TYPICAL // 2) : mid - TYPICAL // 2 + TYPICAL].tolist()
    return [start + int(i) for i in wrong], [start + int(i) for i in typical], p.split


def _cams_html(
    rundata: RunData,
    out: _Pass,
    model: torch.nn.Module,
    pre: Preprocess,
    device: str,
    images: torch.Tensor,
    names: list[str],
) -> list[str]:
    wrong, typical, split = _cam_picks(rundata, out)
    parts = [
        "<h3>Why the model decides (Grad-CAM)</h3>",
        f"<p>Heatmaps over the {split} images the model is most confidently wrong on, and "
        "over typical correctly classified ones of each class (median confidence): where "
        "the evidence for the predicted class lies.</p>",
    ]
    for title, picks in (("most confidently wrong", wrong), ("typical", typical)):
        if not picks:
            continue
        batch = rundata.at_image_size(picks, pre)
        cams, logits = grad_cam(model, pre.normalize(batch).to(device))
        probs = calibrated_softmax(logits, out.temperature)
        cards = []
        for k, i in enumerate(picks):
            c = int(probs[k].argmax())
            lines = [
                names[i],
                f"{rundata.classes[int(out.labels[i])]} -> "
                f"{rundata.classes[c]} ({float(probs[k, c]):.2f})",
            ]
            cards.append(_card([overlay(images[i], cams[k])], lines, "cam"))
        parts += [f"<h4>{title}</h4>", f'<div class="cards">{"".join(cards)}</div>']
    return parts


def write_audit_report(
    rd: RunDir,
    result: AuditResult,
    rundata: RunData,
    out: _Pass,
    model: torch.nn.Module,
    pre: Preprocess,
    device: str,
) -> dict[str, str]:
    """The section (into the run's report.html when there is one) and the audit's page."""
    images = torch.cat([p.images.images for p in rundata.parts])
    names = [n for p in rundata.parts for n in p.names]
    lookup = dict(zip(names, images))
    counts = ", ".join(f"{n} {i}" for i, n in result.counts().items())
    body = [
        f"<style>{CSS}</style>",
        "<h2>Data audit</h2>",
        f"<p>{html.escape(counts)}; every finding in audit/audit.csv. "
        + ("" if result.label_evidence == "margins" else html.escape(result.label_evidence))
        + "</p>",
    ]
    body += _findings_html(result, lookup)
    body += _cams_html(rundata, out, model, pre, device, images, names)
    section = START + "".join(body) + END
    atomic_write_text(rd.audit_section, section)
    atomic_write_text(
        rd.audit_report,
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>imgcls audit: {html.escape(rd.path.name)}</title></head><body>"
        f"{section}</body></html>",
    )
    files = {"section": str(rd.audit_section), "report": str(rd.audit_report)}
    if rd.report.exists():
        atomic_write_text(rd.report, with_section(rd.report.read_text(), section))
        files["run_report"] = str(rd.report)
    return files


def with_section(page: str, section: str) -> str:
    """``page`` with the audit section replaced, or added before ``</body>``."""
    pattern = re.escape(START) + ".*?" + re.escape(END)
    if re.search(pattern, page, flags=re.S):
        return re.sub(pattern, lambda _: section, page, flags=re.S)
    return page.replace("</body>", section + "</body>", 1) if "</body>" in page else page + section
