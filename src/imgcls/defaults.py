"""Defaults decided from the data, never from the data set's name: the input size and the
model from the images' size, batch size and epochs from their number, horizontal flips from
a measurement, class weights from the imbalance; and the defaults that follow from other
keys (learning rate, label smoothing, TTA). Each decision comes with its reason, printed
before training; the values are written to the run's ``config.yaml``; a key given
explicitly is never overridden."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data.dataset import ArrayDataset, Dataset
from .data.materialize import grayscale_share, infer_image_size
from .data.prepare import Decoding, PreparedData, prepare_data
from .data.sources import Source
from .models import family_model, is_external, list_models, model_info
from .utils import settings_from

MAX_AUTO_SIZE = 64  # the largest input chosen by default: a CPU trains it in minutes
AUTO_MODEL = "fastnet_s"
TARGET_STEPS = 3000  # optimizer steps a default run aims for ...
# ... within these epochs: past 100 passes over a small set (a few hundred images) accuracy
# stops paying for the time (benchmarks/knee.md)
MIN_EPOCHS, MAX_EPOCHS = 10, 100
TIME_CAP = "8m"  # default cap on the training time (plus loading and the test pass: ~10 min)
# The config keys a model's recipe may set (ModelInfo.recipe), with their usual values.
RECIPE_KEYS = {"depthwise_decay": True}
IMBALANCE = 3.0  # largest / smallest class above which the loss is weighted by default
FLIP_KEEPS_CLASS = 0.5  # see flips_keep_class


@dataclass
class Decision:
    """A default chosen for ``key``: its value and why."""

    key: str
    value: object
    reason: str

    def line(self) -> str:
        return f"  {self.key} {self.value}: {self.reason}"


def image_shape(cfg: TrainConfig, train: Dataset) -> tuple[int, int, list[Decision]]:
    """(input size, channels, decisions): the data's own size up to 64 px (the median
    shorter side of a folder's images), 1 channel when most images are grayscale."""
    decisions = []
    if isinstance(train, ArrayDataset):
        native, channels = max(train.image_size), train.channels
    else:
        native, channels = infer_image_size(train, max_pixels=cfg.max_pixels), cfg.channels
        if channels is None:
            gray, probed = grayscale_share(train, max_pixels=cfg.max_pixels)
            channels = 1 if gray * 2 > probed else 3
            decisions.append(Decision("channels", channels, f"{gray:,} of {probed:,} images "
                                      "probed are grayscale" + (
                                          "; the colour ones are reduced to luma"
                                          if channels == 1 and gray < probed else "")))
    size = cfg.image_size
    if size is None:
        size = min(native, MAX_AUTO_SIZE)
        why = ("the images' own size" if size == native else
               f"images are {native} px (median shorter side); {MAX_AUTO_SIZE} px keeps "
               "training on a CPU to minutes (--image-size for more detail)")
        decisions.append(Decision("image_size", size, why))
    return size, cfg.channels or channels, decisions


def training_defaults(cfg: TrainConfig, counts: list[int], size: int
                      ) -> tuple[dict, list[Decision]]:
    """The model, batch size, epochs and class weights that ``cfg`` leaves open, for
    ``counts`` training images per class at ``size`` px."""
    n, decisions, changes = sum(counts), [], {}
    if cfg.model is None:
        changes["model"] = AUTO_MODEL
        decisions.append(Decision("model", AUTO_MODEL, f"a small residual CNN for {size} px "
                                  "images, fast on a CPU (--model for another)"))
    elif cfg.model not in list_models() and (pick := family_model(cfg.model, size)):
        changes["model"] = pick  # a family name: its model for this input size
        decisions.append(Decision("model", pick, f"the {cfg.model} family's model for "
                                  f"{size} px images (--model {pick} to name it)"))
    recipe_changes, recipe = model_recipe(cfg, changes.get("model", cfg.model))
    changes |= recipe_changes
    decisions += recipe
    if cfg.batch_size is None:
        batch = 16
        while batch < 256 and batch * 2 <= n / 40:
            batch *= 2
        changes["batch_size"] = batch
        steps = n / batch
        why = ("about 40 steps per epoch or more" if steps >= 40 else
               f"the smallest batch, {math.ceil(steps)} step(s) per epoch (fewer than the "
               "40 aimed for)")
        decisions.append(Decision("batch_size", batch, f"{n:,} training images: {why}"))
    if cfg.epochs is None and not cfg.budget:
        steps = max(1, n // changes.get("batch_size", cfg.batch_size))
        wanted = max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps))
        epochs = changes["epochs"] = min(MAX_EPOCHS, wanted)
        why = (f"about {epochs * steps:,} optimizer steps ({steps} per epoch)" if
               epochs == wanted else f"{epochs * steps:,} optimizer steps ({steps} per epoch): "
               f"past {MAX_EPOCHS} passes over this few images more stop paying")
        decisions.append(Decision("epochs", epochs, f"{why}; training time capped at "
                                  f"{TIME_CAP}, fewer epochs if they do not fit (--epochs or "
                                  "--budget to choose)"))
    if cfg.class_weights is None:
        ratio = max(counts) / max(1, min(counts))
        weights = "auto" if ratio >= IMBALANCE else "none"
        changes["class_weights"] = weights
        if weights == "auto":
            decisions.append(Decision("class_weights", weights, f"the largest class has "
                                      f"{ratio:.1f}x the images of the smallest: the loss "
                                      "weighs classes by inverse frequency"))
    return changes, decisions


def model_recipe(cfg: TrainConfig, model: str) -> tuple[dict, list[Decision]]:
    """The training defaults that ``model``'s registry entry asks for (e.g. no weight decay
    on depthwise filters), for the keys ``cfg`` leaves open; a key of RECIPE_KEYS that
    neither sets takes its usual value."""
    recipe = {} if is_external(model) else model_info(model).recipe
    changes, decisions = {}, []
    for key, usual in RECIPE_KEYS.items():
        if getattr(cfg, key) is None:
            changes[key], why = recipe.get(key, (usual, None))
            if why:
                decisions.append(Decision(key, changes[key], f"{model}'s recipe: {why}"))
    return changes, decisions


def _pixels(images: torch.Tensor, side: int = 16) -> torch.Tensor:
    x = images.float()
    if x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    x = F.interpolate(x, size=(side, side), mode="area").flatten(1)
    return F.normalize(x - x.mean(1, keepdim=True), dim=1)


def flips_keep_class(train: ArrayDataset, seed: int = 0, refs: int = 5000, queries: int = 1000
                     ) -> tuple[bool | None, str]:
    """Whether a mirror image keeps its class, measured: held-out training images are
    classified by the nearest class mean of the others (raw pixels at 16 px, centred), once
    as they are and once mirrored. How much of the gain over chance survives the mirror says
    it: most of it for clothes (shoes face one way, yet are shoes), little for digits (a
    mirrored 3 is no digit). Class means rather than nearest neighbours: near-duplicates (an
    icon set) make a neighbour match on the exact picture, which no mirror keeps. Flips stay
    on from ``FLIP_KEEPS_CLASS``; None when the means are too close to chance to tell
    (photos, icons: then flips are the usual choice)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=g)
    q, r = order[:min(queries, len(train) // 3)], order[min(queries, len(train) // 3):][:refs]
    ref, labels = _pixels(train.images[r]), train.labels[r]
    present = labels.unique()
    means = F.normalize(torch.stack([ref[labels == c].mean(0) for c in present]), dim=1)

    def accuracy(images: torch.Tensor) -> float:
        return float((present[(_pixels(images) @ means.T).argmax(1)] == train.labels[q])
                     .float().mean())

    plain, mirrored = accuracy(train.images[q]), accuracy(train.images[q].flip(3))
    chance = float(torch.bincount(labels).max()) / len(labels)
    if len(q) < 20 or plain - chance < 0.1:
        return None, (f"class means tell the images apart {plain:.0%} right, too close to "
                      f"chance ({chance:.0%}) to tell whether a mirror keeps the class")
    kept = (mirrored - chance) / (plain - chance)
    return kept >= FLIP_KEEPS_CLASS, (f"mirrored images keep {kept:.2f} of their accuracy "
                                      f"by class means ({mirrored:.0%} vs {plain:.0%})")


def flip_decision(cfg: TrainConfig, train: ArrayDataset | None) -> Decision | None:
    """Horizontal flips, unless given (or ``--augment none``): measured
    (:func:`flips_keep_class`); on when the measurement cannot tell or the images are
    streamed, as usual for pictures."""
    if cfg.flip is not None or cfg.augment == "none":
        return None
    if train is None:
        return Decision("flip", True, "images streamed from disk, not measured; the usual "
                        "choice for pictures (--flip false for text, digits, arrows)")
    keep, why = flips_keep_class(train, cfg.seed)
    if keep is None:
        return Decision("flip", True, why + "; on, the usual choice for pictures")
    return Decision("flip", keep, why + ("" if keep else ": a mirror image is another "
                                         "thing, flips off"))


def resolve_data(cfg: TrainConfig, source: Source
                 ) -> tuple[TrainConfig, PreparedData, list[Decision]]:
    """The data split and decoded at the input size and channels decided for it, and ``cfg``
    with every default that the data decide filled in (model, batch size, epochs, class
    weights, flips), with the reasons for the ones it chose."""
    size, channels, decisions = image_shape(cfg, source.train)
    data = prepare_data(source, val_split=cfg.val_split, seed=cfg.seed,
                        labels_per_class=cfg.labels_per_class, image_size=size,
                        channels=channels, decoding=settings_from(Decoding, cfg))
    changes, chosen = training_defaults(cfg, data.train.counts(), size)
    flip = flip_decision(cfg, data.train if isinstance(data.train, ArrayDataset) else None)
    decisions += chosen + ([flip] if flip else [])
    if cfg.flip is None:  # without augmentation, no flips either
        changes["flip"] = flip.value if cfg.augment != "none" else False
    return cfg.replace(image_size=size, channels=channels, **changes), data, decisions


def default_lr(cfg: TrainConfig) -> float:
    """SGD: 0.1 per 128 images that a step back-propagates through (the linear scaling rule),
    which with ``--unlabeled`` counts the ``ssl_ratio`` x batch unlabelled images too: a
    semi-supervised step learns from all of them."""
    if cfg.lr is not None:
        return cfg.lr
    if cfg.optimizer != "sgd":
        return 1e-3
    scale = 1.0 if is_external(cfg.model) else model_info(cfg.model).lr_scale
    images = cfg.batch_size * (1 + cfg.ssl_ratio if cfg.unlabeled else 1)
    return 0.1 * images / 128 * scale


def default_label_smoothing(cfg: TrainConfig) -> float:
    """0.1, or 0 when semi-supervised (smoothing would keep confidences under the
    pseudo-label threshold)."""
    if cfg.label_smoothing is not None:
        return cfg.label_smoothing
    return 0.0 if cfg.unlabeled else 0.1


def tta_mode(cfg: TrainConfig, flips: bool) -> str:
    """The final test's TTA: auto is flip where mirror images are the same class (the run
    trains with flips), none elsewhere; an explicit mode is obeyed."""
    if cfg.tta == "auto":
        return "flip" if flips else "none"
    return cfg.tta


