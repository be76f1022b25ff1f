"""The ``imgcls train`` / ``compare`` / ``tune`` flags built from :class:`TrainConfig`: one
flag per field, typed from its annotation and shown in sections (data, model, optimisation,
...), and the config that the flags given on a command line, over ``--config``, make."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import get_args, get_type_hints

from .config import TrainConfig, read_yaml


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None: the config flags default to None (only flags given
    override the YAML file) and name their real default in their help themselves."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


# The sections of the config flags in `imgcls train --help` (also compare and tune): every
# TrainConfig field, in config.py's order. A new field goes in one of them: tests/test_cli.py
# checks that none is left out (one that is would be listed among the plain options).
CONFIG_GROUPS: dict[str, tuple[str, ...]] = {
    "presets": ("recipe",),
    "data": ("data", "data_dir", "val_split", "image_size", "channels", "resize", "in_memory",
             "memory_limit_gb", "workers", "max_pixels"),
    "model": ("model", "model_kwargs", "pretrained", "freeze", "unfreeze_after",
              "backbone_lr_scale"),
    "optimisation": ("epochs", "train_fraction", "budget", "batch_size", "optimizer", "lr",
                     "momentum", "nesterov", "weight_decay", "depthwise_decay", "schedule",
                     "warmup_epochs", "step_size", "gamma", "label_smoothing", "grad_clip",
                     "nonfinite_patience", "nonfinite_limit", "class_weights", "sampler", "ema"),
    "augmentation": ("augment", "flip", "translate", "progressive_resize", "rotate", "erase",
                     "tta"),
    "semi-supervised": ("labels_per_class", "unlabeled", "ssl", "teacher", "propagate",
                        "ssl_threshold", "ssl_weight", "ssl_ratio"),
    "execution": ("device", "precision", "channels_last", "threads", "sync_bn", "seed",
                  "deterministic"),
    "run folder and lifecycle": ("out", "name", "resume", "early_stop", "checkpoint_every",
                                 "progress", "tensorboard"),
}
_GROUP_OF = {name: group for group, names in CONFIG_GROUPS.items() for name in names}


def add_config_flags(p: argparse.ArgumentParser, helps: dict[str, str] | None = None) -> None:
    """``--config`` and one flag per TrainConfig field, typed from its annotation, in the
    sections of CONFIG_GROUPS; defaults are left None so that only flags given on the command
    line override the YAML file. ``helps`` replaces the help of some fields, for a command
    that uses them otherwise than ``imgcls train`` (compare's per-model budget)."""
    groups = {title: p.add_argument_group(title) for title in CONFIG_GROUPS}
    groups["presets"].add_argument("--config", help="YAML file of config keys; flags override it")
    hints = get_type_hints(TrainConfig)
    by_name = {f.name: f for f in fields(TrainConfig)}
    # section by section (in the usage line too); a field in none is a plain option
    order = [n for n in _GROUP_OF if n in by_name] + [n for n in by_name if n not in _GROUP_OF]
    for f in (by_name[n] for n in order):
        g = groups[_GROUP_OF[f.name]] if f.name in _GROUP_OF else p
        types = [t for t in (get_args(hints[f.name]) or (hints[f.name],)) if t is not type(None)]
        t = types[0]
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is MISSING else f.default
        help_ = (helps or {}).get(f.name, f.metadata["help"])
        if "default:" not in help_:  # a help that names its default says it once
            help_ += f" (default: {default if default not in (None, {}) else '-'})"
        if t is bool:
            g.add_argument(flag, type=_bool, nargs="?", const=True, default=None,
                           metavar="BOOL", help=help_)
        elif t is dict:
            g.add_argument(flag, type=_yaml_mapping, default=None, metavar="YAML", help=help_)
        else:
            g.add_argument(flag, type=t, default=None, choices=f.metadata.get("choices"),
                           help=help_)


def _yaml_mapping(v: str) -> dict:
    import yaml

    try:
        d = yaml.safe_load(v)
    except yaml.YAMLError:
        d = None
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping like '{{a: 1}}', got {v!r}")
    return d


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    base = read_yaml(args.config) if args.config else {}
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name) is not None}
    return TrainConfig.from_dict({**base, **given}, where=args.config or "command line")
