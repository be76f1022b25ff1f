"""The peer on the data-set suite: fastai's from-folder workflow, from scratch, with fastai's
own defaults, on a flat ``TRAIN_DIR/<class>/<file>`` folder, evaluated on ``TEST_DIR``.

    /work/peer-venv/bin/python benchmarks/peer_fastai.py \\
        ~/.cache/imgcls/suite/icons ~/.cache/imgcls/suite/icons-test --minutes 10

Its environment is a venv of its own, outside the repository (imgcls's venv is not touched):

    python3 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/peer-venv/bin/pip install fastai==2.8.12    # keeps torch 2.14.1 (fastcore 2.2.41)

The recipe is fastai's documented one, as a user writes it:

    dls = ImageDataLoaders.from_folder(TRAIN_DIR, valid_pct=0.2, seed=42,
                                       item_tfms=Resize(224), batch_tfms=aug_transforms())
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    learn.fit_one_cycle(EPOCHS)

with these choices recorded in the row: ``Resize(224)`` (the item transform of fastai's docs
and course; ``--image-size`` changes it, ``auto`` for the images' median shorter side up to
128 px), batch size 64, ``lr_max`` fastai's default 1e-3 (``--lr-find``: the valley that
``learn.lr_find()`` suggests, as fastai's course does; its time, ``lr_find_s``, is not
part of ``--minutes``: on a few hundred images its 100 steps are tens of epochs), no
seed besides the split's, pretrained=False (nothing is downloaded: resnet18 starts from
torchvision's random init, and fastai then adds no ImageNet normalisation and does not
freeze the body). Unreadable files are removed from the item list as fastai's docs do, with
``verify_images(get_image_files(TRAIN_DIR))``; since ``from_folder`` takes no item list and
the docs' ``failed.map(Path.unlink)`` would delete files of the suite, the verified list goes
to ``ImageDataLoaders.from_path_func(TRAIN_DIR, files, parent_label, valid_pct=0.2, seed=42,
...)``, which builds the same DataBlock (ImageBlock, CategoryBlock, RandomSplitter(0.2, 42),
parent_label) over that list; ``dropped`` counts the files removed.

EPOCHS is chosen up front so that training takes about ``--minutes`` (one 1cycle schedule,
not a first epoch followed by a second fit): a few training batches (forward and backward,
data loading and augmentation included, the model's weights restored afterwards) and two
validation batches are timed, an epoch's time is estimated from them, and EPOCHS =
round(minutes * 60 / epoch estimate), at least 1 (``--epochs`` overrides). Test top-1 is
measured on ``dls.test_dl(TEST_DIR's verified files, with_labels=True)``, i.e. with the
validation transforms (Resize only) and labels from the folder names.

Prints ONE JSON line on stdout (fastai's progress goes to stderr) and appends it, with the
date, machine and versions, to benchmarks/suite_results.jsonl via _record.append_row.
"""

import argparse
import contextlib
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import fastai
import torch
from _record import append_row
from fastai.vision.all import (
    ImageDataLoaders,
    Resize,
    accuracy,
    aug_transforms,
    get_image_files,
    parent_label,
    resnet18,
    verify_images,
    vision_learner,
)

HERE = Path(__file__).parent
BATCH_SIZE = 64  # fastai's default, written out so that the row can say it


def verified(folder: Path) -> tuple[list[Path], int]:
    """The image files under ``folder`` that PIL can decode, and how many were dropped."""
    files = get_image_files(folder)
    failed = {Path(f) for f in verify_images(files)}
    return [f for f in files if Path(f) not in failed], len(failed)


def median_side(files: list[Path]) -> int:
    """The median shorter side of the images ``files`` (their headers only)."""
    from PIL import Image

    sides = []
    for f in files:
        with Image.open(f) as im:
            sides.append(min(im.size))
    return int(statistics.median(sides))


def seconds_per_epoch(learn, n_train: int = 3) -> float:
    """Estimated seconds of one training epoch plus its validation pass, timed on a few
    batches without changing the model (its state, BatchNorm statistics included, is saved
    and restored; no optimiser step is taken)."""
    dls, model = learn.dls, learn.model
    state = copy.deepcopy(model.state_dict())

    def timed(dl, n: int, train: bool) -> list[float]:
        model.train(train)
        times, it = [], iter(dl)
        t0 = time.perf_counter()
        for _ in range(min(n, len(dl))):
            xb, yb = next(it)
            with torch.set_grad_enabled(train):
                loss = learn.loss_func(model(xb), yb)
                if train:
                    loss.backward()
                    model.zero_grad(set_to_none=True)
            t1 = time.perf_counter()
            times.append(t1 - t0)
            t0 = t1
        del it
        return times

    # the first batch of each pass pays for starting the workers, as it does in every epoch
    train_t = timed(dls.train, n_train + 1, True)
    valid_t = timed(dls.valid, 2, False)
    model.load_state_dict(state)
    per_train = statistics.median(train_t[1:] or train_t)
    per_valid = valid_t[-1]
    return (train_t[0] + per_train * (len(dls.train) - 1)
            + valid_t[0] + per_valid * (len(dls.valid) - 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("train_dir", type=Path, help="flat <class>/<file> folder to train on")
    ap.add_argument("test_dir", type=Path, help="held-out folder with the same classes")
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="training time to aim at (default 10); sets EPOCHS up front")
    ap.add_argument("--epochs", type=int, help="EPOCHS as given instead of from --minutes")
    ap.add_argument("--image-size", default="224",
                    help="Resize(N) (default 224); auto: the training images' median shorter "
                    "side, at most 128")
    ap.add_argument("--lr-find", action="store_true",
                    help="lr_max from learn.lr_find()'s suggestion (its valley) instead of "
                    "fastai's default 1e-3; its time is recorded apart (lr_find_s)")
    ap.add_argument("--no-record", action="store_true",
                    help="print the row only (benchmarks/suite.py records it in its own shape)")
    args = ap.parse_args()
    train_dir, test_dir = args.train_dir.expanduser(), args.test_dir.expanduser()

    files, dropped = verified(train_dir)
    test_files, test_dropped = verified(test_dir)
    size = (min(128, median_side(files)) if args.image_size == "auto"
            else int(args.image_size))
    dls = ImageDataLoaders.from_path_func(
        train_dir, files, parent_label, valid_pct=0.2, seed=42, bs=BATCH_SIZE,
        item_tfms=Resize(size), batch_tfms=aug_transforms())
    # the learner's own folder (lr_find saves the weights to PATH/models/) outside the data
    scratch = tempfile.TemporaryDirectory()
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy,
                           path=scratch.name)

    with contextlib.redirect_stdout(sys.stderr):
        t0 = time.perf_counter()
        lr_max = learn.lr_find(show_plot=False).valley if args.lr_find else learn.lr
        lr_find_s = time.perf_counter() - t0
        estimate = None
        if args.epochs is None:
            estimate = seconds_per_epoch(learn)
            epochs = max(1, round(args.minutes * 60 / estimate))
        else:
            epochs = args.epochs
        print(f"peer_fastai: {len(files)} images ({dropped} unreadable dropped), "
              f"{len(dls.vocab)} classes, lr_max {lr_max:.2g}, epoch estimate "
              f"{estimate and round(estimate, 1)} s, {epochs} epochs", flush=True)
        t0 = time.perf_counter()
        learn.fit_one_cycle(epochs, lr_max=lr_max)
        seconds = time.perf_counter() - t0
        names = list(learn.recorder.metric_names[1:-1])  # train_loss, valid_loss, accuracy
        valid_top1 = float(learn.recorder.values[-1][names.index("accuracy")])
        test_dl = dls.test_dl(test_files, with_labels=True)
        preds, targs = learn.get_preds(dl=test_dl)
        test_top1 = float((preds.argmax(dim=1) == targs).float().mean())

    row = {"peer": "fastai", "fastai": fastai.__version__, "data": str(args.train_dir),
           "test": str(args.test_dir), "epochs": epochs, "image_size": size,
           "seconds": round(seconds, 1), "valid_top1": round(valid_top1, 4),
           "test_top1": round(test_top1, 4),
           "minutes": args.minutes if args.epochs is None else None,
           "epoch_s_estimate": estimate and round(estimate, 2), "train_items": len(dls.train_ds),
           "valid_items": len(dls.valid_ds), "test_items": len(test_files), "dropped": dropped,
           "test_dropped": test_dropped, "classes": len(dls.vocab), "arch": "resnet18",
           "pretrained": False, "item_tfms": f"Resize({size})",
           "batch_tfms": "aug_transforms()", "bs": BATCH_SIZE, "lr_max": lr_max,
           "lr_find_s": round(lr_find_s, 1) if args.lr_find else None,
           "device": str(dls.device), "torch_threads": torch.get_num_threads()}
    print(json.dumps(row), flush=True)
    if not args.no_record:
        append_row(HERE / "suite_results.jsonl", row)


if __name__ == "__main__":
    main()
