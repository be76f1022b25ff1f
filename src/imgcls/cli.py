"""The ``imgcls`` command line: parse, call the library, print. Errors meant for users are
printed as one line (exit code 2); anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .config import DEFAULT_EPOCHS, TTA_MODES
from .config_flags import DefaultsFormatter, add_config_flags, config_from_args
from .errors import ImgclsError


def cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    result = train(config_from_args(args))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if result.held_out:
        split, m = result.held_out
        print(f"{split} accuracy {m['top1']:.4f} ({m['n']} images"
              f"{'' if split == 'test' else '; no test split'})")
    if not result.unchanged:
        print(f"run saved to {result.path} ({result.seconds:.0f} s)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .evaluation import evaluate
    from .report import absent_note

    r = evaluate(args.run, args.data, args.split, data_dir=args.data_dir, tta=args.tta,
                 calibrate=args.calibrate, reject_below=args.reject_below,
                 ood_score=args.ood_score, report=not args.no_report,
                 batch_size=args.batch_size, device=args.device,
                 log=lambda m: print(m, file=sys.stderr))
    if args.format == "json":
        print(json.dumps({k: v for k, v in r.items() if k != "calibration"}
                         | {"calibration": {k: v for k, v in r["calibration"].items()
                                            if not k.startswith("bins")}}))
        return 0
    con = Console()
    skipped = f", {len(r['skipped'])} unreadable skipped" if r["skipped"] else ""
    con.print(f"[bold]{r['split']}[/]: {r['n']} images{skipped}  loss {r['loss']:.4f}  "
              f"top-1 [bold]{r['top1']:.4f}[/]  top-5 {r['top5']:.4f}  "
              f"macro F1 {r['macro']['f1']:.4f}")
    t = Table("class", "precision", "recall", "F1", "support")
    for p in r["per_class"]:
        t.add_row(p["class"], f"{p['precision']:.4f}", f"{p['recall']:.4f}", f"{p['f1']:.4f}",
                  str(p["support"]))
    for name in ("macro", "weighted"):
        a = r[name]
        t.add_row(f"[bold]{name} avg", f"{a['precision']:.4f}", f"{a['recall']:.4f}",
                  f"{a['f1']:.4f}", str(r["n"]))
    con.print(t)
    if absent_note(r):
        con.print(absent_note(r))
    if r["most_confused"]:
        t = Table("true", "predicted as", "count", "share")
        for m in r["most_confused"][:5]:
            t.add_row(m["true"], m["predicted"], str(m["count"]), f"{m['rate']:.3f}")
        con.print("most confused:", t)
    c = r["calibration"]
    con.print(f"calibration: T = {c['temperature']:.3f}; ECE {c['ece_before']:.4f} -> "
              f"{c['ece_after']:.4f}; NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}")
    if "open_set" in r:
        o = r["open_set"]
        con.print(f"open set ({o['score']} >= {o['threshold']}): coverage {o['coverage']:.4f}, "
                  f"accuracy on answered {o['accuracy_answered']:.4f}")
    if "files" in r:  # the evaluation's own report; on the run's data, the run's one too
        paths = [r["files"][k] for k in ("report", "run_report") if k in r["files"]]
        con.print(f"report: {' and '.join(paths)}", soft_wrap=True)  # paths stay whole
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict, print_table, to_csv, to_json
    from .results import check_top_k

    check_top_k(args.top_k, "--top-k")  # a usage error, before the model is loaded
    records = predict(args.run, args.paths, top_k=args.top_k, batch_size=args.batch_size,
                      reject_below=args.reject_below, score=args.ood_score,
                      device=args.device)
    errors = [r for r in records if "error" in r]
    predicted = len(records) - len(errors)
    for r in errors:
        print(f"imgcls: cannot read {r['error']}", file=sys.stderr)
    if args.format in ("csv", "json"):
        text = to_csv(records) if args.format == "csv" else to_json(records)
        if args.output:
            from .utils import atomic_write_text

            atomic_write_text(args.output, text)
            print(f"wrote {predicted} prediction(s) to {args.output}"
                  + (f" ({len(errors)} file(s) could not be read: rows with an error)"
                     if errors else ""), file=sys.stderr)
        else:
            print(text, end="" if text.endswith("\n") else "\n")
    elif predicted:
        print_table(records)
    print(f"{predicted} predicted, {len(errors)} unreadable", file=sys.stderr)
    return 0 if predicted else 1


def cmd_data_info(args: argparse.Namespace) -> int:
    from .data.images import skip_summary
    from .data.info import describe, sample_grid
    from .data.sources import load_source

    source = load_source(args.data, args.data_dir)
    info = describe(source)
    grid = sample_grid(source, args.grid) if args.grid else None
    if args.format == "json":
        print(json.dumps(dict(info, grid=str(Path(grid).resolve()) if grid else None)))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]{info['name']}[/]: {len(info['classes'])} classes, "
              f"{info['channels']} channel(s), {info['image_size'][0]}x{info['image_size'][1]}"
              f" px (sampled), mean {info['mean']} std {info['std']}")
    t = Table("class", *info["splits"])
    for i, name in enumerate(info["classes"]):
        t.add_row(name, *(str(s["counts"][i]) for s in info["splits"].values()))
    t.add_row("[bold]total", *(f"[bold]{s['images']}" for s in info["splits"].values()))
    con.print(t)
    con.print(f"imbalance ratio (largest / smallest class): {info['imbalance_ratio']}")
    if "warning" in info:
        con.print(f"[yellow]warning:[/] {info['warning']}")
    if info["unreadable"]:
        con.print(f"{len(info['unreadable'])} file(s) not counted above, unreadable "
                  "(--format json lists them):", highlight=False)
        for line in skip_summary(info["unreadable"]):
            con.print(f"  {line}", highlight=False, markup=False)
    if info["conflicts"]:
        con.print(f"[yellow]warning:[/] {len(info['conflicts'])} file(s) have the same bytes "
                  f"as a file of another class; first: {info['conflicts'][0]}", highlight=False)
    if grid:
        con.print(f"wrote the sample grid to {Path(grid).resolve()} (--grid PATH, '' for none)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models.table import format_table, model_table, select_models
    from .progress import progress_bar

    names = select_models(args.pattern, args.family)
    shape = dict(input_size=args.image_size, in_chans=args.channels)
    rows = [row for name in progress_bar(names, total=len(names), desc="counting FLOPs")
            for row in model_table([name], latency=False, **shape)]
    if not args.no_latency:  # all models in one call: their timings are interleaved
        rows = model_table(names, batch=args.batch, threads=args.threads, **shape)
    print(format_table(rows, args.format))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model

    export_model(args.run, args.format, args.out, opset=args.opset)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(args.model, args.host, args.port, backend=args.backend, name=args.name,
          max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, timeout_s=args.timeout_s,
          max_body_mb=args.max_body_mb, queue_size=args.queue, precision=args.precision,
          compile=args.compile)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    r = bench(args.model, input_size=args.image_size, in_chans=args.channels,
              batch=args.batch, steps=args.steps, compile=args.compile, onnx=not args.no_onnx,
              log=(lambda _: None) if args.format == "json" else print)
    if args.format == "json":
        print(json.dumps(r))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, leaderboard_markdown

    base = config_from_args(args)
    if not base.budget and not base.epochs:
        base = base.replace(budget="10m")
    rows = compare([m.strip() for m in args.models.split(",") if m.strip()], base,
                   args.leaderboard)
    print(leaderboard_markdown(rows), end="")
    print(f"leaderboard written to {args.leaderboard}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .config import parse_duration
    from .tune import tune

    base = config_from_args(args)
    budget = parse_duration(base.budget, "budget") if base.budget else None  # TUNE_HELPS
    r = tune(base.replace(budget=None), args.study_dir, trials=args.trials, budget_s=budget,
             study_name=args.study, seed=base.seed, storage=args.storage)
    print(f"best val top-1 {r['value']:.4f} after {r['trials']} trials: {r['params']}")
    print(f"best config: {r['config']}  (imgcls train --config {r['config']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imgcls", description="Image classification: from a "
                                "folder of labelled images to a trained, evaluated, calibrated "
                                "and served model. `imgcls COMMAND --help` for each command.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"imgcls {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval, _add_predict, _add_compare, _add_tune, _add_bench,
                _add_data, _add_models, _add_export, _add_serve):
        add(sub)
    return p


def _add_image_shape_flags(p: argparse.ArgumentParser, size: int, channels: int) -> None:
    """``--image-size`` and ``--channels``, named as ``imgcls train`` names them; the former
    spellings ``--input-size`` and ``--in-chans`` still parse (hidden from the help)."""
    p.add_argument("--image-size", type=int, default=size, help="square input side in pixels")
    p.add_argument("--channels", type=int, default=channels, choices=(1, 3),
                   help="input channels")
    p.add_argument("--input-size", dest="image_size", type=int, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("--in-chans", dest="channels", type=int, default=argparse.SUPPRESS,
                   choices=(1, 3), help=argparse.SUPPRESS)


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model; with no arguments, on the embedded sample",
                       formatter_class=DefaultsFormatter)
    add_config_flags(t)
    t.set_defaults(func=cmd_train)


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
    e.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    e.add_argument("--format", default="table", choices=("table", "json"),
                   help="tables on the terminal, or one JSON object")
    _add_max_pixels(e)
    e.set_defaults(func=cmd_eval)


def _add_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest image decoded, in pixels (default 50,000,000); larger "
                   "ones are reported unreadable")


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
    _add_max_pixels(pr)
    pr.set_defaults(func=cmd_predict)


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
    c.set_defaults(func=cmd_compare)


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
    tu.set_defaults(func=cmd_tune)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="training and inference speed against this machine's "
                       "measured GEMM peak")
    b.add_argument("--model", default="fastnet_s", help="model name (imgcls models)")
    _add_image_shape_flags(b, size=28, channels=1)
    b.add_argument("--batch", type=int, default=256, help="training batch size")
    b.add_argument("--steps", type=int, default=20, help="timed training steps")
    b.add_argument("--compile", default="auto", choices=("auto", "yes", "no"),
                   help="consider torch.compile for inference")
    b.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime runner")
    b.add_argument("--threads", type=int, default=None, help="torch threads while timing")
    b.add_argument("--format", default="table", choices=("table", "json"),
                   help="a table, or one JSON object")
    b.set_defaults(func=cmd_bench)


def _add_data(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="inspect a data set")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("info", help="classes, counts, imbalance, mean/std, a sample grid")
    di.add_argument("data", help="data set name or path")
    di.add_argument("--data-dir", default=None, help="folder holding a named data set's files")
    di.add_argument("--grid", default="samples.png", help="PNG path of the sample grid "
                    "('' for none)")
    di.add_argument("--format", default="table", choices=("table", "json"))
    di.set_defaults(func=cmd_data_info)


def _add_models(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="every registered model: family, parameters, FLOPs, "
                       "CPU latency (batch 1) and throughput (batch 64)")
    m.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'resnet*', or "
                   "one timm/<name> or tv/<name> model")
    m.add_argument("--family", default=None,
                   help="only this family (a glob pattern, e.g. 'res*'); unknown: lists them")
    _add_image_shape_flags(m, size=32, channels=3)
    m.add_argument("--no-latency", action="store_true", help="skip the timing (fast)")
    m.add_argument("--batch", type=int, default=64, help="batch size of the throughput")
    m.add_argument("--threads", type=int, default=None, help="torch threads while timing")
    m.add_argument("--format", default="table", choices=("table", "csv", "json"),
                   help="a table, CSV or JSON")
    m.set_defaults(func=cmd_models)


def _add_export(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("export", help="export a run's model (preprocessing inside) to ONNX or "
                       "TorchScript, checked for parity with the PyTorch model")
    x.add_argument("run", help="run folder (or its model.safetensors)")
    x.add_argument("--format", default="onnx", choices=("onnx", "torchscript"),
                   help="ONNX (ONNX Runtime, any language) or TorchScript (torch)")
    x.add_argument("--out", default=None, help="output file (default: <run>/model.onnx or "
                   "<run>/model.torchscript.pt)")
    x.add_argument("--opset", type=int, default=18, help="ONNX opset (at least 17)")
    x.set_defaults(func=cmd_export)


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
    sv.set_defaults(func=cmd_serve)


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


def _unknown_flags(parser: argparse.ArgumentParser, args: argparse.Namespace,
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown_flags(parser, args, extra)
    if getattr(args, "max_pixels", None):
        os.environ["IMGCLS_MAX_PIXELS"] = str(args.max_pixels)  # decoding threads see it
    try:
        return args.func(args)
    except ImgclsError as e:
        print(f"imgcls: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # a run stopped by Ctrl-C continues where its last checkpoint left it: say how
        run = getattr(e, "run", None) if args.command == "train" else None
        print("imgcls: interrupted" + (f"; resume with: imgcls train --resume "
                                       f"{shlex.quote(str(run))}" if run else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
