"""The run configuration: one dataclass, YAML in and YAML out, and the CLI flags built from it.

Every field is a ``--flag`` of ``imgcls train`` (underscores become dashes); a YAML file given
with ``--config`` sets defaults that flags override. The resolved config is saved in the run
as ``config.yaml`` and is enough to repeat the run.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from .errors import ConfigError

# test-time augmentation: the image; also its mirror image; also both moved by one pixel
TTA_MODES = ("none", "flip", "shift")


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:  # noqa: A002
    meta = {"help": help, "choices": choices}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    recipe: str | None = _f(None, "a named preset of the keys below (fast: the most accuracy "
                            "per CPU second on small images); keys given explicitly win")
    # data
    data: str = _f("sample", "data set name (sample, fashion-mnist, mnist, cifar10, cifar100, "
                   "digits) or a folder / CSV manifest path")
    data_dir: str | None = _f(None, "folder holding the named data set's files")
    val_split: float = _f(0.1, "fraction of the training images held out for validation "
                          "(stratified; 0 uses the source's own val split or none)")
    image_size: int | None = _f(None, "input size in pixels (default: the data's own size, "
                                "or the median shorter side of a folder's images, at most "
                                "64)")
    channels: int | None = _f(None, "1 or 3 input channels (default: 1 when most images are "
                              "grayscale)")
    resize: str = _f("shorter_crop", "how images of another size are resized",
                     ("shorter_crop", "squash"))
    in_memory: str = _f("auto", "hold decoded images in memory (auto: when they fit in "
                        "--memory-limit-gb)", ("auto", "yes", "no"))
    memory_limit_gb: float = _f(4.0, "largest decoded data set held in memory, GiB")
    workers: int | None = _f(None, "decoding workers for streamed folders (default: cores)")
    max_pixels: int = _f(50_000_000, "largest image decoded, in pixels (checked from the "
                         "header first); larger ones are skipped and listed")
    labels_per_class: int | None = _f(None, "keep only this many labelled training images per "
                                      "class (stratified by --seed), e.g. for semi-supervised "
                                      "experiments")
    unlabeled: str | None = _f(None, "unlabelled images for semi-supervised training: a data "
                               "set name or path (labels ignored), or 'rest' for the training "
                               "images --labels-per-class left out")
    ssl: str = _f("fixmatch", "semi-supervised method (freematch: FixMatch with thresholds "
                  "that follow the model's own confidence, per class; distill: the --teacher "
                  "run's predictions are the targets)",
                  ("fixmatch", "freematch", "pseudo", "distill"))
    teacher: str | None = _f(None, "with --ssl distill: a trained run folder or "
                             "model.safetensors whose class probabilities on the --unlabeled "
                             "images the model learns (Noisy Student); several, separated by "
                             "commas, teach the mean of theirs (an ensemble)")
    propagate: int = _f(0, "with --ssl distill: refine the teacher's targets by label "
                        "propagation over each image's N nearest neighbours in the teacher's "
                        "feature space, the labelled images holding their labels (0: off)")
    ssl_threshold: float = _f(0.95, "confidence above which a prediction is a pseudo-label "
                              "(fixmatch, pseudo)")
    ssl_weight: float = _f(1.0, "weight of the unlabelled loss")
    ssl_ratio: int = _f(3, "unlabelled images per labelled image in a step (FixMatch's mu)")
    # model
    model: str | None = _f(None, "model name (`imgcls models` lists them; default: fastnet_s, "
                           "a small residual CNN), or a family name (resnet, mobilenet, ...): "
                           "the family's small-image model at 64 px and below, its paper "
                           "model above")
    model_kwargs: dict = _f({}, "extra builder options, e.g. {width_mult: 0.5}")
    pretrained: str | None = _f(None, "initial weights: an imgcls run folder, a .safetensors or "
                                "a .pth state dict; 'hub' for timm/ and tv/ models' own weights")
    freeze: str = _f("none", "freeze the backbone and train only the classifier (linear probe)",
                     ("none", "backbone"))
    unfreeze_after: int = _f(0, "with --freeze backbone: train everything from this epoch on "
                             "(0: stay frozen)")
    backbone_lr_scale: float = _f(1.0, "learning-rate multiplier of the backbone (fine-tuning "
                                  "with e.g. 0.1)")
    # optimisation
    epochs: int | None = _f(None, "training epochs (default: about 3,000 optimizer steps, "
                            "10-100 epochs, within an 8-minute training time cap; or as many "
                            "as fit in --budget; on --resume: the run's own)")
    train_fraction: float = _f(1.0, "share of the training set one epoch sees (a new random "
                               "part each epoch); --budget lowers it when not even one epoch fits")
    budget: str | None = _f(None, "time budget of this run's training, e.g. 90s, 5m, 1.5h: as "
                            "many epochs as fit, re-planned from the measured pace; the "
                            "loading before and the final test after are not counted "
                            "(--epochs given wins)")
    batch_size: int | None = _f(None, "images per optimisation step (global, over all "
                                "processes; default: a power of two from 16 to 256 that gives "
                                "about 40 steps per epoch or more)")
    optimizer: str = _f("sgd", "optimizer", ("sgd", "adam", "adamw"))
    lr: float | None = _f(None, "peak learning rate (default: 0.1 x batch/128 for SGD, as the "
                          "CIFAR ResNet recipe, counting the unlabelled images of a step "
                          "with --unlabeled: batch x (1 + ssl_ratio); a tenth of that for "
                          "models without normalisation layers (VGG without BN, "
                          "SqueezeNet); 1e-3 for Adam/AdamW)")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(True, "Nesterov momentum for SGD")
    weight_decay: float = _f(5e-4, "weight decay (not applied to norms and biases)")
    depthwise_decay: bool | None = _f(None, "weight decay on depthwise convolution filters "
                                      "(default: the model's recipe: off for MobileNet and "
                                      "Xception, as their papers train them; on otherwise)")
    schedule: str = _f("onecycle", "learning-rate schedule",
                       ("onecycle", "cosine", "step", "constant"))
    warmup_epochs: float = _f(0.0, "linear warm-up epochs for cosine, step and constant "
                              "(one-cycle has its own ramp)")
    step_size: int = _f(5, "StepLR: epochs between decays")
    gamma: float = _f(0.1, "StepLR: decay factor")
    label_smoothing: float | None = _f(None, "label smoothing of the cross-entropy loss "
                                       "(default: 0.1; 0 with --unlabeled, where smoothing "
                                       "would keep confidences below --ssl-threshold)")
    grad_clip: float = _f(0.0, "clip the gradient norm to this value (0: off)")
    nonfinite_patience: int = _f(5, "non-finite losses in a row (each step skipped) before the "
                                 "learning rate is halved")
    nonfinite_limit: int = _f(25, "non-finite losses in a row after which the run stops")
    class_weights: str | None = _f(None, "weigh the loss by class: auto = inverse class "
                                   "frequency (N / (classes x count)); default: auto when "
                                   "the largest class has 3x the images of the smallest",
                                   ("none", "auto"))
    sampler: str = _f("random", "training order: balanced draws every class equally often "
                      "(with replacement)", ("random", "balanced"))
    ema: float = _f(0.0, "decay of an exponential moving average of the weights (0: off; "
                    "e.g. 0.999); evaluated and saved instead of the raw weights")
    # augmentation
    augment: str = _f("auto", "augmentation preset (auto: light below 20 epochs, standard "
                      "from 20)", ("auto", "none", "light", "standard", "strong"))
    flip: bool | None = _f(None, "horizontal flips (default: measured on the data, off where "
                           "a mirror image changes the class, as for digits or text)")
    translate: int | None = _f(None, "override the preset's translation, pixels")
    progressive_resize: float = _f(0.0, "progressive resizing: the first epoch trains at this "
                                   "share of the image size (e.g. 0.6), growing linearly to "
                                   "the full size at three quarters of the epochs (0: off)")
    rotate: float | None = _f(None, "override the preset's rotation, degrees")
    erase: float | None = _f(None, "override the preset's random-erasing probability")
    tta: str = _f("auto", "test-time augmentation of the final test: 'flip' averages the "
                  "logits of each image and its mirror image, 'shift' also of both moved by "
                  "one pixel (10 views); auto: flip when the run trains with flips",
                  ("auto", *TTA_MODES))
    # execution
    device: str = _f("auto", "cpu, cuda, cuda:N or auto")
    precision: str = _f("auto", "arithmetic: auto measures fp32 and bf16 and keeps the faster",
                        ("auto", "fp32", "bf16", "fp16"))
    channels_last: str = _f("auto", "memory format (auto: measured with the precision)",
                            ("auto", "yes", "no"))
    threads: int | None = _f(None, "CPU threads for torch (default: torch's choice)")
    sync_bn: bool = _f(False, "under torchrun: synchronise BatchNorm statistics across "
                       "processes (GPUs only)")
    seed: int = _f(0, "seed of the split, initialisation, data order and augmentation")
    deterministic: bool = _f(False, "bitwise-reproducible kernels (slower)")
    # run folder and lifecycle
    out: str = _f("runs", "folder in which run folders are created")
    name: str | None = _f(None, "run folder name (default: <model>-<data>-<timestamp>)")
    resume: str | None = _f(None, "continue the run in this folder from its last checkpoint")
    early_stop: int = _f(0, "stop after this many epochs without a better val accuracy, nor "
                         "the same one at a lower val loss (0: off)")
    checkpoint_every: int = _f(0, "also checkpoint every N steps inside an epoch (0: per epoch)")
    progress: bool = _f(True, "show progress bars on a terminal")
    tensorboard: bool = _f(False, "also write TensorBoard event files to <run>/tensorboard "
                           "(needs the tensorboard package: pip install imgcls[tensorboard])")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check types and ranges; raise ConfigError naming the field."""
        hints = get_type_hints(TrainConfig)
        for f in fields(self):
            v = getattr(self, f.name)
            allowed = get_args(hints[f.name]) or (hints[f.name],)
            if v is None and type(None) in allowed:
                continue
            if isinstance(v, bool) and bool not in allowed:
                raise ConfigError(f"{f.name}: expected {_type_name(allowed)}, got {v!r}")
            if float in allowed and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
                setattr(self, f.name, v)
            if float in allowed and isinstance(v, str):  # YAML 1.1 reads 1e-2 as a string
                try:
                    v = float(v)
                except ValueError:
                    pass
                else:
                    setattr(self, f.name, v)
            if not isinstance(v, tuple(t for t in allowed if isinstance(t, type))):
                raise ConfigError(f"{f.name}: expected {_type_name(allowed)}, got {v!r}")
            choices = f.metadata.get("choices")
            if choices and v not in choices:
                raise ConfigError(f"{f.name}: must be one of {', '.join(choices)}, got {v!r}")
        positive = ("epochs", "batch_size", "memory_limit_gb", "lr", "ssl_ratio", "max_pixels")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip", "ssl_weight", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum: must be in [0, 1), got {self.momentum}")
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(f"train_fraction: must be in (0, 1], got {self.train_fraction}")
        if not 0 <= self.val_split < 1:
            raise ConfigError(f"val_split: must be in [0, 1), got {self.val_split}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels: must be 1 or 3, got {self.channels}")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if not (self.progressive_resize == 0 or 0.25 <= self.progressive_resize < 1):
            raise ConfigError(f"progressive_resize: must be 0 (off) or in [0.25, 1), got "
                              f"{self.progressive_resize}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema: must be in [0, 1), got {self.ema}")
        if (self.ssl == "distill") != (self.teacher is not None):
            raise ConfigError("teacher: --ssl distill and --teacher go together, got ssl "
                              f"{self.ssl!r} and teacher {self.teacher!r}")
        if self.propagate and self.ssl != "distill":
            raise ConfigError("propagate: refines the targets of --ssl distill, not of "
                              f"{self.ssl!r}")
        if self.propagate < 0:
            raise ConfigError(f"propagate: must be 0 (off) or a number of neighbours, got "
                              f"{self.propagate}")
        if self.teacher is not None and not self.unlabeled:
            raise ConfigError("teacher: needs --unlabeled images for the teacher to label")
        if self.teacher is not None and not all(self.teachers):
            raise ConfigError(f"teacher: an empty name among the comma-separated teachers "
                              f"{self.teacher!r}")
        _ = self.budget_s  # a budget that does not parse is refused here
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"image_size: must be at least 8, got {self.image_size}")

    @property
    def budget_s(self) -> float | None:
        """``budget`` in seconds (None: no budget); the one place it is parsed."""
        return None if self.budget is None else parse_duration(self.budget, "budget")

    @property
    def teachers(self) -> list[str]:
        """The ``--teacher`` runs, one or more (comma-separated)."""
        return [t.strip() for t in self.teacher.split(",")] if self.teacher is not None else []

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            import difflib

            hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, names, 1))
                     else k for k in unknown]
            raise ConfigError(f"{where}: unknown key(s) {', '.join(hints)}")
        recipe = d.get("recipe")
        if recipe is not None:
            if recipe not in RECIPES:
                raise ConfigError(f"recipe: must be one of {', '.join(RECIPES)}, got {recipe!r}")
            preset = dict(RECIPES[recipe])
            if d.get("budget") and d.get("epochs") is None:
                preset.pop("epochs", None)  # a --budget given plans the epochs itself
            d = {**preset, **d}  # the recipe's values, then what was given
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_yaml(path), where=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


DEFAULT_EPOCHS = 10

# Named presets. "fast": see benchmarks/README.md for the measurements behind each value.
RECIPES: dict[str, dict] = {
    "fast": {"model": "fastnet_s", "batch_size": 256, "epochs": 10, "label_smoothing": 0.2,
             "augment": "light", "tta": "flip", "val_split": 0.0},
}


DURATION_UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
                  "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
                  "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600}


def parse_duration(text: str, field_name: str = "duration") -> float:
    """Seconds in '90', '90s', '5m', '5min', '5 minutes', '1.5h', '2 hours'; ConfigError
    naming the field otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    value = -1.0
    if m and (m[2] == "" or m[2] in DURATION_UNITS):
        value = float(m[1]) * DURATION_UNITS.get(m[2], 1)
    if value <= 0:
        raise ConfigError(f"{field_name}: expected a duration like 90s, 5m, 5min or 1.5h, "
                          f"got {text!r}")
    return value


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from ``path``; ConfigError naming the file when it is not one."""
    try:
        d = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(d).__name__}")
    return d


def _type_name(types: tuple) -> str:
    return " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t))
                       for t in types)
