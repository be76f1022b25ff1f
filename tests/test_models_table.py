"""model_table: parameter and FLOP counts against hand counts, speed columns, error rows."""

import csv
import io
import json

import pytest
import torch

from imgcls.errors import ConfigError
from imgcls.models import create_model
from imgcls.models.table import format_table, model_table

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rows():
    before = torch.get_num_threads()
    # one thread: on a shared CPU, several spin-wait for each other (100x slower at batch 1)
    rows = model_table(["seed_torch_cnn", "resnet20", "not_a_model"], image_size=28,
                       channels=1, repeats=2, batch_size=4, threads=1)
    assert torch.get_num_threads() == before
    return rows


def test_counts_and_speed(rows):
    by_name = {r["name"]: r for r in rows}
    for name in ("seed_torch_cnn", "resnet20"):
        r = by_name[name]
        m = create_model(name, num_classes=10, channels=1, image_size=28)
        assert r["params"] == sum(p.numel() for p in m.parameters())
        assert r["flops"] > 0 and r["latency_ms"] > 0 and r["throughput"] > 0
        assert r["threads"] == 1
    assert by_name["seed_torch_cnn"]["family"] == "seed"
    assert by_name["resnet20"]["family"] == "resnet"
    # multiply-adds counted as 2 FLOPs: conv1, conv2, fc128, fc10
    hand = (28 * 28 * 32 * 9 * 2 + 14 * 14 * 64 * 32 * 9 * 2
            + 3136 * 128 * 2 + 128 * 10 * 2)
    assert abs(by_name["seed_torch_cnn"]["flops"] - hand) <= 0.1 * hand


def test_error_rows(rows):
    bad = rows[-1]
    assert bad["name"] == "not_a_model" and "unknown model" in bad["error"]
    assert "params" not in bad
    # too small to build: seed_keras_cnn needs 10 px
    (row,) = model_table(["seed_keras_cnn"], image_size=8, latency=False)
    assert "at least 10 pixels" in row["error"]
    (row,) = model_table(["seed_torch_cnn"], image_size=28, channels=1, latency=False)
    assert row["flops"] > 0 and "latency_ms" not in row


def test_formats(rows):
    text = format_table(rows, "table")
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["family", "name"] and "GFLOPs" in lines[0]
    assert "seed_torch_cnn" in lines[1] and "error: unknown model" in lines[3]
    # numeric columns are right-aligned to the header's end
    assert len(lines[1]) == len(lines[2]) == len(lines[0])
    parsed = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    assert [r["name"] for r in parsed] == ["seed_torch_cnn", "resnet20", "not_a_model"]
    assert int(parsed[0]["params"]) == rows[0]["params"] and parsed[2]["error"]
    assert json.loads(format_table(rows, "json")) == rows
    with pytest.raises(ConfigError, match="csv"):
        format_table(rows, "xml")


def test_bench_reports_training_and_interleaved_inference(tmp_path, monkeypatch, capsys):
    """`imgcls bench` end to end on a small net: GEMM peaks, training rate and GFLOP/s that
    agree with the FLOP count, and the three inference runners with consistent ratios."""
    from imgcls.bench import bench
    from imgcls.runtime.plan import native_bf16

    monkeypatch.setenv("IMGCLS_HOME", str(tmp_path))  # a fresh plan cache
    r = bench("seed_torch_cnn", batch_size=32, steps=2, compile="no", repeats=3, log=print)
    hand = 28 * 28 * 32 * 9 * 2 + 14 * 14 * 64 * 32 * 9 * 2 + 3136 * 128 * 2 + 128 * 10 * 2
    assert abs(r["flops_per_image"] - hand) <= 0.1 * hand
    assert r["gemm_peak_gflops"]["fp32"] > 0  # bf16 too where the CPU has bf16 instructions
    assert ("bf16" in r["gemm_peak_gflops"]) == native_bf16()[0]
    assert r["train_gflops"] == pytest.approx(
        3 * r["flops_per_image"] * r["train_images_per_s"] / 1e9)
    inf = r["inference"]
    auto = [k for k in inf if k.startswith("auto (")]
    assert len(auto) == 1 and set(inf) == {"eager fp32", auto[0], "onnxruntime fp32"}
    for v in inf.values():
        assert v["latency_ms"] > 0 and v["throughput"] > 0
    assert r["auto_vs_eager_throughput"] == pytest.approx(
        inf[auto[0]]["throughput"] / inf["eager fp32"]["throughput"])
    assert "img/s at batch 64" in capsys.readouterr().out


def test_the_table_says_what_input_it_measured(rows):
    caption = format_table(rows, "table").splitlines()[-1]
    assert caption == "input 28x28 px, 1 channel; latency at batch 1, img/s at batch 4, 1 thread"
    (row,) = model_table(["seed_torch_cnn"], image_size=40, channels=3, latency=False)
    assert row["channels"] == 3
    assert format_table([row], "table").splitlines()[-1] == "input 40x40 px, 3 channels"
    assert "channels" in next(csv.DictReader(io.StringIO(format_table([row], "csv"))))


def test_counting_builds_no_weights_and_does_no_arithmetic(monkeypatch, tmp_path):
    """Listing without timing counts on the meta device (shapes, no data): every registered
    model in seconds instead of a minute, with the counts of a real forward pass."""
    from imgcls.models import table

    monkeypatch.setenv("IMGCLS_HOME", str(tmp_path))  # nothing cached
    devices = []
    count = table.count_flops
    monkeypatch.setattr(table, "count_flops",
                        lambda m, x: devices.append(x.device.type) or count(m, x))
    names = ["seed_torch_cnn", "resnet20", "densenet_mini", "mobilenet_mini"]
    rows = model_table(names, image_size=28, channels=1, latency=False)
    assert devices == ["meta"] * len(names)
    for r in rows:
        m = create_model(r["name"], num_classes=10, channels=1, image_size=28)
        assert r["params"] == sum(p.numel() for p in m.parameters())
        assert r["flops"] == count(m, torch.zeros(1, 1, 28, 28)), r["name"]


def test_family_patterns_and_outside_models(capsys):
    from imgcls.cli import main

    assert main(["models", "--family", "timm/*", "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert "the families are densenet" in err and "imgcls models timm/resnet18" in err
    assert main(["models", "tv/resnet18", "--no-latency", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["family"] == "tv" and row["params"] > 1e7 and row["flops"] > 0


def test_timing_prints_no_cuda_toolkit_note(tmp_path):
    """torch.utils.benchmark imports torch.utils.cpp_extension, which logs "No CUDA runtime is
    found" where a CUDA toolkit lies beside a machine without a GPU."""
    import os
    import subprocess
    import sys

    code = ("from imgcls.models.table import model_table; model_table(['seed_torch_cnn'], "
            "image_size=12, channels=1, repeats=1, batch_size=2, threads=1)")
    env = dict(os.environ, CUDA_HOME=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=True)
    assert "CUDA" not in r.stderr, r.stderr
