"""The ``imgcls`` command line's parsers: every subcommand's flags (those of the run
configuration come from :mod:`imgcls.config_flags`), and the error for an unknown flag with
the flag most likely meant. Each subcommand names its ``cmd_<name>`` of :mod:`imgcls.cli`."""

from __future__ import annotations

import argparse
import sys

from .config import DEFAULT_EPOCHS, TTA_MODES
from .config_flags import DefaultsFormatter, add_config_flags
from .runtime.images import MAX_PIXELS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imgcls", description="Image classification: from a "
                                "folder of labelled images to a trained, evaluated, calibrated "
                                "and served model. `imgcls COMMAND --help` for each command.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"imgcls {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval, _add_predict, _add_audit, _add_compare, _add_tune,
                _add_bench, _add_data, _add_models, _add_export, _add_serve):
        add(sub)
    _no_abbreviations(p)
    return p


def _no_abbreviations(p: argparse.ArgumentParser) -> None:
    """A flag must be spelled out: argparse would take ``--rotat 3`` for ``--rotate 3`` and
    train minutes on a typo; unknown, it gets the error that names the flag meant."""
    p.allow_abbrev = False
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


class _Renamed(argparse.Action):
    """A former spelling of a flag: it still parses, to the new flag's setting, with a
    warning naming the new spelling; hidden from the help. Kept for one release."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kw) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"warning: {option_string} is deprecated and will be removed; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def _renamed(p: argparse.ArgumentParser, old: str, new: str, **kw) -> None:
    """Accept ``old`` for the flag ``new`` (already added), with a deprecation warning."""
    dest = new.lstrip("-").replace("-", "_")
    p.add_argument(old, dest=dest, action=_Renamed, new=new, default=argparse.SUPPRESS, **kw)


def _add_image_shape_flags(p: argparse.ArgumentParser, size: int, channels: int) -> None:
    """``--image-size`` and ``--channels``, named as ``imgcls train`` names them (the former
    spellings ``--input-size`` and ``--in-chans`` still parse, with a warning)."""
    p.add_argument("--image-size", type=int, default=size, help="square input side in pixels")
    p.add_argument("--channels", type=int, default=channels, choices=(1, 3),
                   help="input channels")
    _renamed(p, "--input-size", "--image-size", type=int)
    _renamed(p, "--in-chans", "--channels", type=int, choices=(1, 3))


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model; with no arguments, on the embedded sample",
                       formatter_class=DefaultsFormatter)
    add_config_flags(t)
    t.add_argument("--audit", action="store_true",
                   help="audit the data when training ends (imgcls audit RUN): mislabelled "
                   "images, duplicates, leaks, outliers in RUN/audit/audit.csv")
    t.set_defaults(command_fn="train")


def _add_audit(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="what is wrong with a run's data: mislabelled images, "
                       "duplicates, train/test leaks, outliers (RUN/audit/audit.csv; user "
                       "files are only read)")
    a.add_argument("run", help="run folder")
    a.add_argument("--data", default=None,
                   help="the run's data set, where its files moved since training")
    a.add_argument("--data-dir", default=None, help="folder holding a named data set's files")
    a.add_argument("--no-report", action="store_true",
                   help="the CSV only: no thumbnails, no heatmaps, no report section")
    _add_pass_flags(a, "a summary table and the first findings, or the findings as JSON")
    a.set_defaults(command_fn="audit")


def _add_pass_flags(p: argparse.ArgumentParser, format_help: str) -> None:
    """The flags of a command that runs a run's model over a data set: batch, device, output
    format (table or json) and the decoding pixel limit."""
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--format", default="table", choices=("table", "json"), help=format_help)
    _add_max_pixels(p)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="metrics, calibration, plots and report.html of a run")
    e.add_argument("run", help="run folder")
    e.add_argument("--data", default=None, help="data set name or path (default: the run's)")
    e.add_argument("--data-dir", default=None, help="folder holding a named data set's files")
    e.add_argument("--reject-below", type=float, default=None,
                   help="answer 'unknown' below this score; reports accuracy and coverage")
    e.add_argument("--ood-score", default="maxprob", choices=("maxprob", "energy"),
                   help="the score --reject-below thresholds")
    e.add_argument("--calibrate", action="store_true",
                   help="fit the temperature again on the validation split and store it in "
                   "the run (changes its probabilities; training fitted one already)")
    e.add_argument("--no-report", action="store_true", help="no PNGs, no report.html")
    e.add_argument("--split", default=None, choices=("train", "val", "test", "all"),
                   help="default: test; without one, the run's validation split of its own "
                   "data, or every image of other data (a folder of class folders)")
    e.add_argument("--tta", nargs="?", const="flip", default="none", choices=TTA_MODES,
                   help="test-time augmentation: --tta (flip) averages each image's logits "
                   "with its mirror image's, as the final test of `imgcls train` does unless "
                   "digits; --tta shift also with both moved by one pixel (10 views)")
    _add_pass_flags(e, "tables on the terminal, or one JSON object")
    e.set_defaults(command_fn="eval")


def _add_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help="largest image decoded, in pixels; larger ones are reported unreadable")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from .results import TOP_K

    pr = sub.add_parser("predict", help="top-k labels and calibrated probabilities of images")
    pr.add_argument("run", help="run folder (or its model.safetensors)")
    pr.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    pr.add_argument("--top-k", type=int, default=TOP_K,
                    help="classes per image, at least 1 (above the number of classes: all)")
    pr.add_argument("--format", default="table", choices=("table", "csv", "json"),
                    help="json: per file {file, label, probability, top_k: [{label, "
                    "probability}]} or {file, error}; csv: file,label,probability,top_k,error "
                    "with top_k as that JSON list")
    pr.add_argument("--output", "-o", default=None, help="file for csv/json (default: stdout)")
    pr.add_argument("--reject-below", type=float, default=None,
                    help="label 'unknown' when the score is below this")
    pr.add_argument("--ood-score", default="maxprob", choices=("maxprob", "energy"),
                    help="the score --reject-below thresholds")
    pr.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    pr.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    pr.add_argument("--explain", default=None, metavar="DIR",
                    help="also write a Grad-CAM heatmap of each image's predicted class "
                    "into DIR (<name>.<class>.gradcam.png)")
    _add_max_pixels(pr)
    pr.set_defaults(command_fn="predict")


# What --budget and --epochs mean where they do not mean one training run's.
COMPARE_HELPS = {
    "budget": "time per model, e.g. 5m: each model's whole run (loading, planning, training "
              "and the final calibration and test passes; the leaderboard's 'run s') fits in "
              "it (default: 10m, unless --epochs)",
    "epochs": "train every model this many epochs instead of within a --budget (default: -, "
              "the budget decides)",
}
TUNE_HELPS = {
    "budget": "time of the whole search, e.g. 2h: no trial starts after it (the one running "
              "finishes); a trial has no budget of its own, it trains --epochs (default: -, "
              "the search runs until --trials are done)",
    "epochs": f"epochs of every trial, the same for all so that they compare (default: "
              f"{DEFAULT_EPOCHS}; imgcls train's default from the data, and its time cap, do "
              "not apply)",
}


def _add_compare(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compare", help="train several models under the same time budget; "
                       "leaderboard with accuracy, size, FLOPs, latency and the Pareto front",
                       formatter_class=DefaultsFormatter)
    c.add_argument("--models", required=True, help="comma-separated model names")
    c.add_argument("--leaderboard", default="leaderboard", help="output folder")
    add_config_flags(c, COMPARE_HELPS)
    c.set_defaults(command_fn="compare")


def _add_tune(sub: argparse._SubParsersAction) -> None:
    tu = sub.add_parser("tune", help="hyper-parameter search (Optuna TPE + pruning, SQLite, "
                        "resumable); writes best.yaml", formatter_class=DefaultsFormatter)
    tu.add_argument("--trials", type=int, default=20, help="finished trials to reach")
    tu.add_argument("--study", default="imgcls", help="study name inside the SQLite file")
    tu.add_argument("--study-dir", default="tune", help="folder of study.db, trials, best.yaml")
    tu.add_argument("--storage", default=None,
                    help="the study's Optuna storage instead of STUDY_DIR/study.db: an RDB URL "
                    "(postgresql://user:pw@host/db) or journal:PATH (a journal file), for "
                    "workers on several machines")
    add_config_flags(tu, TUNE_HELPS)
    tu.set_defaults(command_fn="tune")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="training and inference speed against this machine's "
                       "measured GEMM peak")
    b.add_argument("--model", default="fastnet_s", help="model name (imgcls models)")
    _add_image_shape_flags(b, size=28, channels=1)
    b.add_argument("--batch-size", type=int, default=256, help="training batch size")
    _renamed(b, "--batch", "--batch-size", type=int)
    b.add_argument("--steps", type=int, default=20, help="timed training steps")
    b.add_argument("--compile", default="auto", choices=("auto", "yes", "no"),
                   help="consider torch.compile for inference")
    b.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime runner")
    b.add_argument("--threads", type=int, default=None, help="torch threads while timing")
    b.add_argument("--format", default="table", choices=("table", "json"),
                   help="a table, or one JSON object")
    b.set_defaults(command_fn="bench")


def _add_data(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="inspect a data set")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("info", help="classes, counts, imbalance, mean/std, a sample grid")
    di.add_argument("data", help="data set name or path")
    di.add_argument("--data-dir", default=None, help="folder holding a named data set's files")
    di.add_argument("--grid", default="samples.png", help="PNG path of the sample grid "
                    "('' for none)")
    di.add_argument("--format", default="table", choices=("table", "json"))
    di.set_defaults(command_fn="data_info")


def _add_models(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="every registered model: family, parameters, FLOPs, "
                       "CPU latency (batch 1) and throughput (batch 64)")
    m.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'resnet*', or "
                   "one timm/<name> or tv/<name> model")
    m.add_argument("--family", default=None,
                   help="only this family (a glob pattern, e.g. 'res*'); unknown: lists them")
    _add_image_shape_flags(m, size=32, channels=3)
    m.add_argument("--no-latency", action="store_true", help="skip the timing (fast)")
    m.add_argument("--batch-size", type=int, default=64, help="batch size of the throughput")
    _renamed(m, "--batch", "--batch-size", type=int)
    m.add_argument("--threads", type=int, default=None, help="torch threads while timing")
    m.add_argument("--format", default="table", choices=("table", "csv", "json"),
                   help="a table, CSV or JSON")
    m.set_defaults(command_fn="models")


def _add_export(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("export", help="export a run's model (preprocessing inside) to ONNX or "
                       "TorchScript, checked for parity with the PyTorch model")
    x.add_argument("run", help="run folder (or its model.safetensors)")
    x.add_argument("--format", default="onnx", choices=("onnx", "torchscript"),
                   help="ONNX (ONNX Runtime, any language) or TorchScript (torch)")
    x.add_argument("--out", default=None, help="output file (default: <run>/model.onnx or "
                   "<run>/model.torchscript.pt)")
    x.add_argument("--opset", type=int, default=18, help="ONNX opset (at least 17)")
    x.set_defaults(command_fn="export")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser("serve", help="serve a run over HTTP: Open Inference Protocol v2 "
                        "(KServe/Triton REST) and multipart /predict",
                        formatter_class=DefaultsFormatter)
    sv.add_argument("model", metavar="RUN_OR_ONNX", help="run folder, model.safetensors or an "
                    "exported model.onnx (local paths only)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (loopback unless "
                    "you say otherwise)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    sv.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"),
                    help="auto: ONNX Runtime when the run has an up-to-date model.onnx")
    sv.add_argument("--name", default=None, help="model name in the URLs (default: the run "
                    "folder's name)")
    sv.add_argument("--max-batch", type=int, default=32, help="images per model run")
    sv.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"),
                    help="torch backend arithmetic; auto measures fp32 and bf16 (bf16 "
                    "probabilities differ from predict's by about 1e-2)")
    sv.add_argument("--compile", default="no", choices=("auto", "yes", "no"),
                    help="torch backend: torch.compile the model (auto: if measured faster)")
    sv.add_argument("--max-delay-ms", type=float, default=5.0,
                    help="how long a batch waits for more requests")
    sv.add_argument("--timeout-s", type=float, default=10.0, help="per request (504 after)")
    sv.add_argument("--max-body-mb", type=float, default=16.0, help="request size (413 over)")
    sv.add_argument("--queue", type=int, default=256, help="waiting requests (503 over)")
    sv.set_defaults(command_fn="serve")


def suggest_flag(flag: str, known: list[str]) -> str | None:
    """The known flag ``flag`` most likely meant: the longest one that it starts with, word
    for word (``--lr-rate``: ``--lr``; ``--epoch-count``: ``--epochs``, the only flag that
    ``epoch`` begins), else the closest spelling of the names without their dashes (compared
    with them, ``--lr-rate`` is nearer ``--rotate`` than ``--lr``)."""
    import difflib

    name = flag.split("=")[0].lstrip("-")
    names = {k.lstrip("-"): k for k in known if k.startswith("--")}
    words = name.replace("_", "-").split("-")
    for n in range(len(words) - 1, 0, -1):  # the longest prefix of whole words first
        prefix = "-".join(words[:n])
        begun = [k for k in names if k.startswith(prefix)]
        if prefix in names or len(begun) == 1:
            return names[prefix if prefix in names else begun[0]]
    close = difflib.get_close_matches(name, list(names), 1, 0.6)
    return names[close[0]] if close else None


def unknown_flags(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   extra: list[str]) -> None:
    """Exit with one error line naming each unknown flag and the nearest known one."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices[args.command]
    known = [o for a in command._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
    hints = []
    for flag in (x for x in extra if x.startswith("-")):
        close = suggest_flag(flag, known)
        hints.append(f"{flag} (did you mean {close}?)" if close else flag)
    command.error(f"unknown flag(s): {', '.join(hints or extra)}")
