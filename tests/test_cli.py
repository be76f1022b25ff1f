"""The command line's surface: the config flags in sections, one name per concept."""

import json
import re
from dataclasses import fields

import pytest

from imgcls.cli import build_parser, main
from imgcls.config import TrainConfig
from imgcls.config_flags import CONFIG_GROUPS


def help_of(capsys, *command: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    return capsys.readouterr().out


def sections(text: str) -> dict[str, list[str]]:
    """The flags of each section of an argparse help text ('title:' lines)."""
    out: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):
            title = line[:-1]
            out[title] = []
        elif title and (m := re.match(r"^  (--[\w-]+)", line)):
            out[title].append(m.group(1))
    return out


def test_every_config_field_is_in_exactly_one_section():
    """A new TrainConfig field must be given a section in CONFIG_GROUPS."""
    grouped = [name for names in CONFIG_GROUPS.values() for name in names]
    assert len(grouped) == len(set(grouped)), "a field is in two sections"
    assert set(grouped) == {f.name for f in fields(TrainConfig)}


@pytest.mark.parametrize("command", ["train", "compare", "tune"])
def test_config_flags_are_shown_in_sections(capsys, command):
    got = sections(help_of(capsys, command))
    for title, names in CONFIG_GROUPS.items():
        assert got[title] == [*(["--config"] if title == "presets" else []),
                              *("--" + n.replace("_", "-") for n in names)], title
    expected = ["presets", "data", "model", "optimisation", "augmentation", "semi-supervised",
                "execution", "run folder and lifecycle"]
    assert [t for t in got if t in CONFIG_GROUPS] == expected
    assert "--image-size" in got["data"] and "--ssl-ratio" in got["semi-supervised"]


@pytest.mark.parametrize(("command", "size", "channels"), [("models", 32, 3), ("bench", 28, 1)])
def test_image_size_and_channels_as_train_names_them(capsys, command, size, channels):
    def shape(*flags: str) -> tuple[int, int]:
        args = build_parser().parse_args([command, *flags])
        return args.image_size, args.channels

    other = 4 - channels  # 1 <-> 3
    assert shape() == (size, channels)
    assert shape("--image-size", "40", "--channels", str(other)) == (40, other)
    # the former spellings still parse, to the same settings, with a warning, unadvertised
    capsys.readouterr()
    assert shape("--input-size", "40") == (40, channels)
    assert shape("--in-chans", str(other)) == (size, other)
    err = capsys.readouterr().err
    assert "--input-size is deprecated" in err and "use --image-size" in err
    assert "--in-chans is deprecated" in err and "use --channels" in err
    with pytest.raises(SystemExit):
        shape("--in-chans", "2")
    text = help_of(capsys, command)
    assert "--image-size" in text and "--channels" in text
    assert "--input-size" not in text and "--in-chans" not in text


@pytest.mark.parametrize(("command", "default"), [("models", 64), ("bench", 256)])
def test_batch_size_as_train_names_it(capsys, command, default):
    def batch(*flags: str) -> int:
        return build_parser().parse_args([command, *flags]).batch_size

    assert batch() == default and batch("--batch-size", "8") == 8
    capsys.readouterr()
    assert batch("--batch", "8") == 8
    assert "--batch is deprecated and will be removed; use --batch-size" in capsys.readouterr().err
    assert "--batch " not in help_of(capsys, command)


def test_models_with_image_size_and_channels(capsys):
    from imgcls.models import create_model

    assert main(["models", "--family", "seed", "--image-size", "28", "--channels", "1",
                 "--no-latency", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"seed_keras_cnn", "seed_torch_cnn"}
    for name, r in rows.items():
        m = create_model(name, num_classes=10, channels=1, image_size=28)
        assert r["image_size"] == 28 and "latency_ms" not in r
        assert r["params"] == sum(p.numel() for p in m.parameters())  # one input channel


@pytest.mark.parametrize("command", ["train", "compare", "tune"])
def test_each_config_flag_names_its_default_once(command):
    sub = next(a for a in build_parser()._actions if a.choices and command in a.choices)
    helps = {a.dest: a.help for a in sub.choices[command]._actions if a.help}
    for name in ("image_size", "workers", "batch_size", "epochs", "lr"):
        assert helps[name].count("default:") == 1, helps[name]
    assert all(h.count("(default:") <= 1 for h in helps.values())
    assert helps["data_dir"].endswith("(default: -)")  # no default named: said so once


@pytest.mark.parametrize(("typed", "meant"), [("--lr-rate", "--lr"), ("--epoch-count", "--epochs"),
                                              ("--batchsize", "--batch-size"),
                                              ("--val_split", "--val-split")])
def test_an_unknown_flag_suggests_the_flag_it_begins_with(capsys, typed, meant):
    with pytest.raises(SystemExit) as e:
        main(["train", typed, "0.1"])
    assert e.value.code == 2
    assert f"unknown flag(s): {typed} (did you mean {meant}?)" in capsys.readouterr().err


def test_ctrl_c_names_the_command_that_resumes_the_run(tmp_path, capsys, monkeypatch):
    from imgcls.engine.trainer import Trainer

    flags = ["--data", "digits", "--epochs", "1", "--precision", "fp32", "--channels-last",
             "no", "--progress", "false", "--out", str(tmp_path / "runs (new)"), "--name", "cut"]
    run_epoch = Trainer.run_epoch

    def interrupted(self, bar):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run_epoch", interrupted)
    assert main(["train", *flags]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    run = tmp_path / "runs (new)" / "cut"  # quoted for the shell
    assert err[-1] == f"imgcls: interrupted; resume with: imgcls train --resume '{run}'"
    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)
    assert main(["train", "--resume", str(run)]) == 0  # the command it names works
    assert (run / "summary.json").exists()


def test_an_abbreviated_flag_is_not_taken_for_the_flag(capsys):
    """argparse would read --rotat as --rotate and train; it is an unknown flag instead."""
    with pytest.raises(SystemExit) as e:
        main(["train", "--rotat", "3", "--epochs", "1"])
    assert e.value.code == 2
    assert "unknown flag(s): --rotat (did you mean --rotate?)" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["{widths: [24, 48", "[1, 2]"])
def test_model_kwargs_that_are_not_a_yaml_mapping_are_a_usage_error(capsys, text):
    with pytest.raises(SystemExit) as e:
        main(["train", "--model-kwargs", text])
    assert e.value.code == 2
    assert "--model-kwargs: expected a YAML mapping" in capsys.readouterr().err
