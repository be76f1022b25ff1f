import pytest
import torch

from imgcls.config import TrainConfig
from imgcls.engine.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_latest,
    previous_path,
    save_checkpoint,
)
from imgcls.engine.schedules import lr_at
from imgcls.errors import ConfigError, RunError
from imgcls.utils import write_yaml


def test_config_yaml_roundtrip_and_errors(tmp_path):
    cfg = TrainConfig(model="resnet20", epochs=3, lr=0.05, model_kwargs={"drop_rate": 0.1})
    write_yaml(tmp_path / "c.yaml", cfg.to_dict())
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key\(s\) epoch \(did you mean"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="batch_size: expected int"):
        TrainConfig(batch_size="big")
    with pytest.raises(ConfigError, match="optimizer: must be one of"):
        TrainConfig(optimizer="lion")
    assert TrainConfig(lr=1).lr == 1.0  # ints are fine where floats are expected
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        TrainConfig.from_yaml(tmp_path / "list.yaml")


def test_schedules():
    peak, total = 1.0, 100
    assert lr_at(0, total, peak) == pytest.approx(0.04)
    assert lr_at(25, total, peak) == pytest.approx(1.0)
    assert lr_at(99, total, peak) < 0.02
    assert lr_at(0, total, peak, schedule="cosine") == pytest.approx(1.0)
    assert lr_at(50, total, peak, schedule="cosine") == pytest.approx(0.5, abs=1e-9)
    assert lr_at(0, total, peak, schedule="step", steps_per_epoch=10, step_size=5) == 1.0
    assert lr_at(50, total, peak, schedule="step", steps_per_epoch=10, step_size=5) == \
        pytest.approx(0.1)
    assert lr_at(4, total, peak, schedule="constant", warmup_steps=10) == pytest.approx(0.5)


def make_state():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    return model, opt


def test_checkpoint_roundtrip_restores_everything(tmp_path):
    model, opt = make_state()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, Checkpoint(model.state_dict(), {"state": {"epoch": 3}},
                                     optimizer=opt.state_dict()))
    ck = load_checkpoint(path)
    assert ck.meta["state"]["epoch"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model[k], v)
    model2, opt2 = make_state()
    opt2.load_state_dict(ck.optimizer)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for pid in s1["state"]:
        for k, v in s1["state"][pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][pid][k]))
    assert s1["param_groups"][0]["lr"] == s2["param_groups"][0]["lr"]


def test_damaged_checkpoint_falls_back_to_previous(tmp_path):
    model, _ = make_state()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, Checkpoint(model.state_dict(), {"state": {"epoch": 1}}))
    save_checkpoint(path, Checkpoint(model.state_dict(), {"state": {"epoch": 2}}))
    assert previous_path(path).exists()
    path.write_bytes(path.read_bytes()[:100])  # truncated after the fact
    with pytest.raises(RunError, match=r"last\.safetensors: damaged"):
        load_checkpoint(path)
    ck, used = load_latest(path)
    assert used == previous_path(path) and ck.meta["state"]["epoch"] == 1


def test_epochs_for_budget():
    from imgcls.engine.budget import epochs_for_budget

    # 100 steps of 0.1 s = 10 s per epoch (+ no val): 60 s fits 5 whole epochs with 10% spare
    assert epochs_for_budget(60, 0.1, 100, 0, 128) == (5, 1.0)
    epochs, fraction = epochs_for_budget(5, 0.1, 100, 0, 128)  # half an epoch, less spare
    assert epochs == 1 and 0.4 < fraction < 0.5


def test_half_made_run_folder_is_reused_and_a_used_one_is_not(tmp_path):
    from imgcls.run import PROBE, RunDir

    # killed while being created: an empty checkpoints/, the write probe, a cut-short write
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / PROBE).write_bytes(b"ok")
    (tmp_path / "r" / ".config.yaml.abc123.tmp").write_bytes(b"epo")
    assert RunDir.create(tmp_path, "r", "x", {"epochs": 1}).path == tmp_path / "r"
    assert (tmp_path / "r" / "config.yaml").read_text() == "epochs: 1\n"
    assert RunDir.create(tmp_path, "r", "x", {"epochs": 2}).path == tmp_path / "r-2"


def test_runs_started_at_once_under_one_name_each_get_their_own_folder(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from imgcls.run import RunDir, ensure_writable

    def start(i: int) -> str:
        ensure_writable(tmp_path / "new")  # the first ones make it
        return RunDir.create(tmp_path / "new", "same", "x", {"seed": i}).path.name

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(start, range(16)))
    assert sorted(names) == sorted(["same"] + [f"same-{i}" for i in range(2, 17)])
    seeds = {(tmp_path / "new" / n / "config.yaml").read_text() for n in names}
    assert len(seeds) == 16  # no run wrote over another's config
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(names)


def test_recipe_fills_in_what_was_not_given():
    cfg = TrainConfig.from_dict({"recipe": "fast", "epochs": 3})
    got = (cfg.model, cfg.batch_size, cfg.label_smoothing, cfg.epochs)
    assert got == ("fastnet_s", 256, 0.2, 3)
    assert cfg.replace(lr=0.5).model == "fastnet_s"  # the recipe survives replace()
    assert TrainConfig.from_dict({"recipe": "fast"}).epochs == 10
    # a --budget given lets the budget plan the epochs; an --epochs given still wins
    budget = TrainConfig.from_dict({"recipe": "fast", "budget": "19m"})
    assert budget.epochs is None and budget.model == "fastnet_s"
    assert TrainConfig.from_dict({"recipe": "fast", "budget": "19m", "epochs": 4}).epochs == 4
    with pytest.raises(ConfigError, match="recipe: must be one of fast"):
        TrainConfig.from_dict({"recipe": "quick"})


def test_train_help_names_each_default_once(capsys):
    """Config flags default to None on the parser (so only given flags override the YAML)
    and name their real default in their help; the help must not add '(default: None)'."""
    from imgcls.cli import build_parser

    def help_of(command: str) -> str:
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    text = help_of("train")
    assert "(default: None)" not in text and "MISSING" not in text
    assert "optimizer (default: sgd)" in text
    assert "finished trials to reach (default: 20)" in help_of("tune")
