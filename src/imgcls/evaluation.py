"""``imgcls eval``: metrics, calibration, open-set rejection, plots and the HTML report.

Evaluating a run never changes it: the calibration temperature is fitted when training ends
(on the validation split) and stored in the run's ``model.safetensors``, so predict, export
and serve give calibrated probabilities; ``calibrate=True`` (``imgcls eval --calibrate``)
fits it again on purpose and stores the new one.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from .config import TrainConfig
from .data.dataset import Dataset
from .data.prepare import Decoding, make_loader, to_model_input
from .data.sources import Source, load_source
from .data.splits import stratified_split
from .errors import ConfigError, DataError
from .metrics import (
    calibration_temperature,
    classification_report,
    expected_calibration_error,
    most_confused,
    negative_log_likelihood,
    rejection_report,
    reliability_bins,
)
from .run import RunDir, load_run_model, set_temperature
from .runtime.forward import predict_logits
from .runtime.images import MAX_PIXELS
from .runtime.plan import eval_plan, resolve_device
from .runtime.preprocess import Preprocess, calibrated_softmax
from .utils import Log, write_json

SPLITS = ("train", "val", "test", "all")


def run_config(path: str | os.PathLike) -> TrainConfig | None:
    p = RunDir(path).config
    return TrainConfig.from_yaml(p) if p.exists() else None


def split_dataset(source: Source, split: str, cfg: TrainConfig | None) -> Dataset:
    """The ``split`` of ``source`` as the run saw it: ``val`` and ``train`` are the run's own
    held-out and training parts (same seed and fraction) when it split the training set;
    ``all`` is every image of a source without test or validation split (a folder of class
    folders)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "test":
        ds = source.test
    elif split == "all":
        ds = source.train if source.val is None and source.test is None else None
    elif cfg is not None and cfg.val_split > 0:
        train_idx, val_idx = stratified_split(source.train.labels, cfg.val_split, cfg.seed)
        ds = source.train.subset(val_idx if split == "val" else train_idx)
    else:
        ds = source.val if split == "val" else source.train
    if ds is None:
        raise DataError(f"{source.name}: has no {split} split" + (
            " (all is for a folder of class folders without train/val/test)"
            if split == "all" else ""))
    return ds


def calibrate_run(run: RunDir, logits: torch.Tensor, labels: torch.Tensor, log: Log) -> float:
    """Fit the temperature on validation ``logits`` (Guo et al. 2017) and store it in the
    run's model file; returns it."""
    temperature, how = calibration_temperature(logits, labels)
    set_temperature(run.path, temperature)
    log(f"{how}; stored in {run.model_file}")
    return temperature


def default_split(source: Source, own: bool, log: Log) -> str:
    """``test`` when the data have one; else the run's validation split of its own data, or
    every image of other data (a folder of class folders), saying so."""
    if source.test is not None:
        return "test"
    if own:
        log(f"{source.name} has no test split: evaluating the run's validation split")
        return "val"
    log(f"{source.name} has no test split: evaluating all its images")
    return "all"


def _logits(model: torch.nn.Module, pre: Preprocess, ds: Dataset, device: str, tta: bool | str,
            batch_size: int, desc: str, max_pixels: int
            ) -> tuple[torch.Tensor, torch.Tensor, Dataset, list]:
    skipped: list[str] = []
    decoding = Decoding(resize=pre.resize, max_pixels=max_pixels)
    ds = to_model_input(ds, pre.channels, pre.image_size, decoding, skipped, desc)
    plan = eval_plan(device)
    loader = make_loader(ds, pre, train=False, batch_size=batch_size, max_pixels=max_pixels,
                         **plan.placement)
    logits, labels = predict_logits(model, loader, plan, tta=tta)
    return logits, labels, ds, skipped + sorted(getattr(loader, "skipped", ()))


def on_model_classes(ds: Dataset, data: str, class_names: list[str]) -> Dataset:
    """``ds`` with labels that index the model's ``class_names``: data may hold some of the
    model's classes (in their own order); a class the model does not know is a DataError."""
    if list(ds.classes) == list(class_names):
        return ds
    index = {c: i for i, c in enumerate(class_names)}
    unknown = [c for c in ds.classes if c not in index]
    if unknown:
        raise DataError(f"{data}: class(es) {', '.join(map(repr, unknown))} unknown to the "
                        f"model, whose classes are {', '.join(class_names)}")
    mapping = torch.tensor([index[c] for c in ds.classes], dtype=torch.long)
    return dataclasses.replace(ds, labels=mapping[ds.labels], classes=list(class_names))


def calibration_figures(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                        fitted_now: bool) -> dict:
    """ECE, NLL and reliability bins without (T = 1) and with ``temperature``."""
    p1 = logits.softmax(1)
    pt = calibrated_softmax(logits, temperature)
    return {
        "temperature": temperature,
        "fitted_on": "val, now" if fitted_now else "stored",
        "ece_before": expected_calibration_error(p1, labels),
        "ece_after": expected_calibration_error(pt, labels),
        "nll_before": negative_log_likelihood(logits, labels),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
        "bins_before": reliability_bins(p1, labels),
        "bins_after": reliability_bins(pt, labels),
    }


def evaluate(
    run: str | os.PathLike,
    data: str | None = None,
    split: str | None = None,
    *,
    data_dir: str | None = None,
    tta: bool | str = False,
    calibrate: bool = False,
    reject_below: float | None = None,
    ood_score: str = "maxprob",
    report: bool = True,
    batch_size: int = 256,
    device: str = "auto",
    max_pixels: int = MAX_PIXELS,
    log: Log = print,
) -> dict:
    """Evaluate a run on ``split`` of ``data`` (default: the run's own data set; the split:
    its test split, else the run's validation split of its own data, else every image).
    Other data may hold some of the model's classes: ``absent_classes`` names the others
    (support 0), and the macro average is over the classes present.

    Returns the classification report (loss, top-1/5, per-class precision/recall/F1 with
    macro and weighted averages, confusion matrix, most-confused pairs), the calibration
    (ECE and NLL before and after temperature scaling; the temperature is fitted on the
    validation split and stored in the run) and, with ``reject_below``, accuracy and coverage
    of the open-set answer. Writes metrics.json, the PNGs and ``report.html`` into the
    evaluation's folder (``RunDir.eval_dir``: ``eval-<split>``, for other data
    ``eval-<data>-<split>``), and for the run's own data also the run's ``report.html`` and
    ``model_card.md``; no PNGs and no report when ``report`` is False. Images of more than
    ``max_pixels`` are skipped as unreadable.
    """
    device = resolve_device(device)
    rd = RunDir.open(run)
    model, pre, meta = load_run_model(rd.path, device)
    cfg = run_config(rd.path)
    data = data or (cfg.data if cfg else None)
    if not data:
        raise ConfigError(f"{run}: no data set recorded in the run; pass --data")
    data_dir = data_dir or (cfg.data_dir if cfg and data == cfg.data else None)
    source = load_source(data, data_dir)
    own = cfg is not None and data == cfg.data
    on_model_classes(source.train, data, pre.class_names)  # unknown classes: before decoding
    split = split or default_split(source, own, log)
    ds = on_model_classes(split_dataset(source, split, cfg if own else None), data,
                          pre.class_names)
    logits, labels, arr, skipped = _logits(model, pre, ds, device, tta, batch_size,
                                           f"decoding {split}", max_pixels)
    result = classification_report(logits, labels, pre.class_names, macro_over="present")
    result.update(run=str(rd.path), data=data, split=split, tta=tta, skipped=skipped,
                  model=meta["model"])
    result["most_confused"] = most_confused(result["confusion"], pre.class_names)

    temperature = pre.temperature
    if calibrate:
        try:
            val = on_model_classes(split_dataset(source, "val", cfg if own else None), data,
                                   pre.class_names)
        except DataError:
            val = None
        if val is not None:
            v_logits, v_labels, _, _ = _logits(model, pre, val, device, tta, batch_size,
                                               "decoding val", max_pixels)
            temperature = calibrate_run(rd, v_logits, v_labels, log)
        else:
            log("no validation split to fit a temperature on; keeping "
                f"T = {temperature:.3f}")
    result["calibration"] = calibration_figures(logits, labels, temperature, calibrate)
    if reject_below is not None:
        result["open_set"] = rejection_report(logits, labels, reject_below, ood_score,
                                              temperature)
    out = rd.eval_dir(split, None if own else data)
    if report:
        from .report.html import write_report

        probs = calibrated_softmax(logits, temperature)
        result["files"] = write_report(rd, result, arr, probs, out, run_report=own)
    write_json(out.metrics, {k: v for k, v in result.items() if k != "files"})
    return result
