import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from conftest import train_digits

import imgcls
from imgcls.cli import main
from imgcls.errors import ImgclsError
from imgcls.export import ProbabilityModel, check_parity, export_model, parity_images
from imgcls.run import load_run_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_digits(tmp_path_factory)


@pytest.fixture(scope="module")
def onnx_path(run):
    return export_model(run, log=lambda _: None)


def test_onnx_export_passes_parity_and_writes_the_sidecar(run, onnx_path):
    assert onnx_path == run / "model.onnx"
    side = json.loads((run / "model.onnx.json").read_text())
    _, pre, _ = load_run_model(run)
    assert side["class_names"] == pre.class_names == [str(i) for i in range(10)]
    assert (side["image_size"], side["channels"]) == (8, 1)
    assert side["mean"] == pre.mean and side["temperature"] == pre.temperature
    assert side["inputs"][0] == {"name": "images", "datatype": "UINT8", "shape": [-1, 1, 8, 8]}
    assert [o["name"] for o in side["outputs"]] == ["probabilities", "logits"]
    assert side["opset"] >= 17 and side["imgcls_version"] == imgcls.__version__
    p = side["parity"]
    assert p["images"] == 256 and "test images of digits" in p["data"]
    assert p["top1_agreement"] == 1.0 and p["max_abs_prob_diff"] <= 1e-3
    # uint8 in, probabilities out, any batch size
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (3, 1, 8, 8), dtype=np.uint8)
    probs, logits = sess.run(None, {"images": x})
    assert probs.shape == logits.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(probs, imgcls.load(run).predict(x), atol=1e-5)


def test_the_onnx_file_carries_its_own_metadata(run, onnx_path, tmp_path):
    _, pre, _ = load_run_model(run)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == pre.class_names
    assert (json.loads(meta["image_size"]), json.loads(meta["channels"])) == (8, 1)
    assert (meta["layout"], meta["color_order"], meta["input_dtype"]) == ("NCHW", "L", "uint8")
    assert json.loads(meta["mean"]) == pre.mean and json.loads(meta["std"]) == pre.std
    assert json.loads(meta["temperature"]) == pre.temperature
    assert meta["resize"] == pre.resize and meta["imgcls_version"] == imgcls.__version__
    assert (meta["input_name"], meta["output_names"]) == ("images", "probabilities,logits")
    side = json.loads((run / "model.onnx.json").read_text())
    assert (side["layout"], side["color_order"], side["input_dtype"]) == ("NCHW", "L", "uint8")
    # the file alone is enough: served without its sidecar, it predicts as the run does
    from imgcls.serve import load_predictor

    alone = tmp_path / "alone.onnx"
    alone.write_bytes(onnx_path.read_bytes())
    predictor = load_predictor(alone)
    assert predictor.backend == "onnx" and predictor.pre == pre
    x = np.random.default_rng(1).integers(0, 256, (4, 1, 8, 8), dtype=np.uint8)
    np.testing.assert_allclose(predictor(x), imgcls.load(run).predict(x), atol=1e-5)


def test_a_wrong_export_fails_loudly_and_writes_nothing(run, tmp_path, monkeypatch):
    def forward(self, images):  # normalisation forgotten: the classic deployment bug
        logits = self.model(images.float() / 255).float()
        return torch.softmax(logits / self.temperature, 1), logits

    monkeypatch.setattr(ProbabilityModel, "forward", forward)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ImgclsError, match="parity check failed"):
        export_model(run, out=out, log=lambda _: None)
    assert not out.exists() and not (tmp_path / "bad.onnx.json").exists()


def test_a_tampered_onnx_file_fails_the_parity_check(run, onnx_path, tmp_path):
    m = onnx.load(onnx_path)
    init = max(m.graph.initializer, key=lambda t: np.prod(t.dims))  # the largest weight
    w = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array(w * 3 + 0.1, init.name))
    bad = tmp_path / "tampered.onnx"
    onnx.save(m, bad)
    model, pre, _ = load_run_model(run)
    images, _ = parity_images(run, pre, n=64)
    assert check_parity(onnx_path, "onnx", model, pre, images)["top1_agreement"] == 1.0
    with pytest.raises(ImgclsError, match="parity check failed"):
        check_parity(bad, "onnx", model, pre, images)


def test_torchscript_export(run):
    path = export_model(run, "torchscript", log=lambda _: None)
    assert path == run / "model.torchscript.pt"
    side = json.loads(path.with_name(path.name + ".json").read_text())
    assert side["format"] == "torchscript" and side["parity"]["top1_agreement"] == 1.0
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path))
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        probs, _ = module(x)
    np.testing.assert_allclose(probs.numpy(), imgcls.load(run).predict(x.numpy()), atol=1e-5)


def test_cli_export_with_opset_17_and_a_bad_opset(run, tmp_path, capsys):
    out = tmp_path / "m17.onnx"
    assert main(["export", str(run), "--out", str(out), "--opset", "17"]) == 0
    assert "top-1 agreement 100.00%" in capsys.readouterr().out
    assert onnx.load(out).opset_import[0].version == 17
    assert main(["export", str(run), "--opset", "16"]) == 2
    assert "at least 17" in capsys.readouterr().err


def test_parity_falls_back_to_random_images_without_the_data(run, tmp_path):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(dict(cfg, data="arrays")))
    _, pre, _ = load_run_model(run)
    images, where = parity_images(tmp_path, pre, log=lambda _: None)
    assert where == "64 random images" and images.shape == (64, 1, 8, 8)
    assert images.dtype == torch.uint8


def test_files_saved_under_the_former_key_names_still_load(run, tmp_path):
    """Run folders and exports written before ``input_size`` and ``in_chans`` became
    ``image_size`` and ``channels`` load as before, without a warning."""
    from imgcls.export import onnx_metadata, preprocess_from_metadata
    from imgcls.run import RunDir
    from imgcls.utils import atomic_write_bytes, read_safetensors, safetensors_bytes

    _, pre, _ = load_run_model(run)
    former = {"image_size": "input_size", "channels": "in_chans"}
    meta = {former.get(k, k): v for k, v in onnx_metadata(pre, "0").items()}
    tensors, saved = read_safetensors(RunDir(run).model_file)
    saved["preprocess"] = {former.get(k, k): v for k, v in saved["preprocess"].items()}
    old = tmp_path / "old"
    old.mkdir()
    atomic_write_bytes(old / "model.safetensors", safetensors_bytes(tensors, saved))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert preprocess_from_metadata(meta) == pre
        assert load_run_model(old)[1] == pre
