"""The ``imgcls`` command line: parse, call the library, print. Errors meant for users are
printed as one line (exit code 2); anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from .cli_parser import build_parser, unknown_flags
from .config_flags import config_from_args
from .errors import ImgclsError
from .utils import process_seconds


def cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    result = train(config_from_args(args), started=args.started)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if result.held_out:
        split, m = result.held_out
        print(f"{split} accuracy {m['top1']:.4f} ({m['n']} images"
              f"{'' if split == 'test' else '; no test split'})")
    if not result.unchanged:
        t = result.phases
        total = sum(t.values())
        print(f"run saved to {result.path} ({total:.0f} s: start-up {t['startup_s']:.1f} s, "
              f"training {t['train_s']:.1f} s, final passes {t['teardown_s']:.1f} s)")
    if args.audit:
        from .audit import audit

        audit(result.path, device=args.device or "auto")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .audit import audit

    r = audit(args.run, data=args.data, data_dir=args.data_dir, device=args.device,
              batch_size=args.batch_size, report=not args.no_report, max_pixels=args.max_pixels,
              log=lambda m: print(m, file=sys.stderr))
    if args.format == "json":
        print(json.dumps([{k: v for k, v in vars(f).items() if k != "split"}
                          for f in r.findings]))
        return 0
    con = Console()
    t = Table("issue", "findings", "first (highest score)")
    for issue, n in r.counts().items():
        first = r.of(issue)[:1]
        t.add_row(issue, str(n), first[0].file + (f" = {first[0].other_file}"
                                                  if first[0].other_file else "")
                  if first else "")
    con.print(t)
    con.print(f"every finding: {r.run.audit_csv}"
              + (f"; thumbnails and heatmaps: {r.files['report']}" if r.files else ""))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .evaluation import evaluate
    from .report import absent_note

    r = evaluate(args.run, args.data, args.split, data_dir=args.data_dir, tta=args.tta,
                 calibrate=args.calibrate, reject_below=args.reject_below,
                 ood_score=args.ood_score, report=not args.no_report,
                 batch_size=args.batch_size, device=args.device, max_pixels=args.max_pixels,
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
    from .prediction import predict, print_table, to_csv, to_json
    from .results import check_top_k

    check_top_k(args.top_k, "--top-k")  # a usage error, before the model is loaded
    records = predict(args.run, args.paths, top_k=args.top_k, batch_size=args.batch_size,
                      reject_below=args.reject_below, ood_score=args.ood_score,
                      device=args.device, max_pixels=args.max_pixels)
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
    if args.explain and predicted:
        from .explain import explain_files
        from .prediction import image_files
        from .runtime.plan import resolve_device

        written = explain_files(args.run, image_files(args.paths), args.explain,
                                resolve_device(args.device), max_pixels=args.max_pixels)
        print(f"wrote {len(written)} Grad-CAM heatmap(s) to {args.explain}", file=sys.stderr)
    return 0 if predicted else 1


def cmd_data_info(args: argparse.Namespace) -> int:
    from .data.info import describe, sample_grid
    from .data.sources import load_source
    from .runtime.images import skip_summary

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
    shape = dict(image_size=args.image_size, channels=args.channels)
    rows = [row for name in progress_bar(names, total=len(names), desc="counting FLOPs")
            for row in model_table([name], latency=False, **shape)]
    if not args.no_latency:  # all models in one call: their timings are interleaved
        rows = model_table(names, batch_size=args.batch_size, threads=args.threads, **shape)
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
    r = bench(args.model, image_size=args.image_size, channels=args.channels,
              batch_size=args.batch_size, steps=args.steps, compile=args.compile,
              onnx=not args.no_onnx,
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
    from .tune import tune

    base = config_from_args(args)
    # --budget is the whole search's (TUNE_HELPS), not each trial's
    r = tune(base.replace(budget=None), args.study_dir, trials=args.trials, budget_s=base.budget_s,
             study_name=args.study, seed=base.seed, storage=args.storage)
    print(f"best val top-1 {r['value']:.4f} after {r['trials']} trials: {r['params']}")
    print(f"best config: {r['config']}  (imgcls train --config {r['config']})")
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "audit": cmd_audit,
            "compare": cmd_compare, "tune": cmd_tune, "bench": cmd_bench,
            "data_info": cmd_data_info, "models": cmd_models, "export": cmd_export,
            "serve": cmd_serve}  # the command_fn each subcommand's parser sets


def main(argv: list[str] | None = None) -> int:
    # when the command began: from a shell, the interpreter's start (where the system says)
    started = time.perf_counter() - ((process_seconds() or 0.0) if argv is None else 0.0)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.started = started
    if extra:
        unknown_flags(parser, args, extra)
    try:
        return COMMANDS[args.command_fn](args)
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
