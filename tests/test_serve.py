import base64
import io
import json
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import uvicorn
from conftest import train_digits
from PIL import Image
from test_images import png_header_only
from tritonclient.utils import InferenceServerException

import imgcls
from imgcls.data.sources import load_source
from imgcls.runtime.preprocess import Preprocess
from imgcls.serve import Predictor, create_app, load_predictor


@contextmanager
def running(app, graceful_s=5):
    """A real uvicorn server on a free loopback port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                           timeout_graceful_shutdown=graceful_s))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}", server, thread
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_digits(tmp_path_factory, export=True)


@pytest.fixture(scope="module")
def server(run):
    predictor = load_predictor(run)
    assert predictor.backend == "onnx"  # auto picks the exported model.onnx
    with running(create_app(predictor)) as (url, _, _):
        yield url


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=f"http://{server}", timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def triton_client(server):
    c = triton.InferenceServerClient(url=server)
    yield c
    c.close()


@pytest.fixture(scope="module")
def images():
    """Twelve digits test images (uint8, N x 1 x 8 x 8)."""
    return load_source("digits").test.images[:12].numpy()


def encode(img, fmt, scale=3):
    """A digit as an RGB file, 3x larger (so the server converts and resizes it)."""
    pil = Image.fromarray(img[0]).resize((8 * scale, 8 * scale), Image.NEAREST).convert("RGB")
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def infer_json(http, inputs, outputs=None, model="digits"):
    body = {"inputs": inputs, **({"outputs": outputs} if outputs else {})}
    return http.post(f"/v2/models/{model}/infer", json=body)


def tensor(x, datatype="UINT8", name="images"):
    return {"name": name, "datatype": datatype, "shape": list(x.shape),
            "data": x.ravel().tolist()}


# --------------------------------------------------------------------------- a real client
def test_triton_client_health_and_metadata(triton_client, run):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("digits")
    assert not triton_client.is_model_ready("nope")
    meta = triton_client.get_server_metadata()
    assert meta["name"] == "imgcls" and "classification" in meta["extensions"]
    m = triton_client.get_model_metadata("digits")
    assert m["name"] == "digits" and m["platform"] == "onnxruntime_onnx"
    assert m["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 1, 8, 8]}]
    assert m["outputs"] == [{"name": n, "datatype": "FP32", "shape": [-1, 10]}
                            for n in ("probabilities", "logits")]  # those of model.onnx
    assert m["parameters"]["labels"] == [str(i) for i in range(10)]  # the output's columns
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton_client.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False])
def test_triton_client_infer_matches_predict(triton_client, run, images, binary):
    expected = imgcls.load(run).predict(images)
    inp = triton.InferInput("images", list(images.shape), "UINT8")
    inp.set_data_from_numpy(images, binary_data=binary)
    res = triton_client.infer("digits", [inp], outputs=[
        triton.InferRequestedOutput("probabilities", binary_data=binary)])
    probs = res.as_numpy("probabilities")
    assert probs.shape == (12, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert (probs.argmax(1) == expected.argmax(1)).all()
    # Triton's classification extension: "score:index:label", best first
    res = triton_client.infer("digits", [inp], outputs=[
        triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)])
    top = res.as_numpy("probabilities")
    assert top.shape == (12, 3)
    for row, exp in zip(top, expected):
        best = row[0].decode() if isinstance(row[0], bytes) else row[0]  # binary / JSON
        score, index, label = best.split(":")
        assert int(index) == exp.argmax() and label == str(exp.argmax())
        assert float(score) == pytest.approx(exp.max(), abs=1e-4)


def test_triton_client_bytes_input_png_and_jpeg(triton_client, run, images, tmp_path):
    files = [encode(images[i], "PNG" if i % 2 else "JPEG") for i in range(6)]
    paths = []
    for i, f in enumerate(files):
        paths.append(tmp_path / f"{i}.{'png' if i % 2 else 'jpg'}")
        paths[-1].write_bytes(f)
    expected = imgcls.load(run).predict([str(p) for p in paths])
    inp = triton.InferInput("images", [len(files)], "BYTES")
    inp.set_data_from_numpy(np.array(files, dtype=np.object_))
    res = triton_client.infer("digits", [inp])
    probs = res.as_numpy("probabilities")
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert (probs.argmax(1) == expected.argmax(1)).all()


def test_torch_backend_agrees(run, images):
    predictor = load_predictor(run, backend="torch")
    assert predictor.backend == "torch"
    with running(create_app(predictor, "d")) as (url, _, _):
        c = triton.InferenceServerClient(url=url)
        inp = triton.InferInput("images", list(images.shape), "UINT8")
        inp.set_data_from_numpy(images)
        probs = c.infer("d", [inp]).as_numpy("probabilities")
        c.close()
    np.testing.assert_allclose(probs, imgcls.load(run).predict(images), atol=1e-4)


# --------------------------------------------------------------------------- JSON forms
def test_fp32_nhwc_and_base64_bytes_give_the_same_answer(http, images):
    ref = np.array(infer_json(http, [tensor(images[:3])]).json()["outputs"][0]["data"])
    fp32 = tensor(images[:3].astype(np.float32), "FP32")
    nhwc = tensor(np.ascontiguousarray(images[:3].transpose(0, 2, 3, 1)))
    files = [base64.b64encode(encode(images[i], "PNG", scale=1)).decode() for i in range(3)]
    b64 = {"name": "images", "datatype": "BYTES", "shape": [3], "data": files}
    for inp in (fp32, nhwc, b64):
        r = infer_json(http, [inp])
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["shape"] == [3, 10]
        np.testing.assert_allclose(out["data"], ref, atol=1e-6)


def test_predict_multipart(http, run, images, tmp_path):
    data = [encode(images[i], "PNG") for i in range(3)]
    files = [("files", (f"d{i}.png", d, "image/png")) for i, d in enumerate(data)]
    r = http.post("/predict", files=files, params={"top_k": 2})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    expected = imgcls.load(run).predict(data)
    assert [p["file"] for p in preds] == ["d0.png", "d1.png", "d2.png"]
    for p, e in zip(preds, expected):
        assert len(p["top_k"]) == 2 and p["top_k"][0]["label"] == str(e.argmax())
        assert p["top_k"][0]["probability"] == pytest.approx(e.max(), abs=1e-4)
        assert p["label"] == p["top_k"][0]["label"]
        assert p["probability"] == p["top_k"][0]["probability"]
    # the same shape as imgcls.predict / `imgcls predict --format json`
    for i, d in enumerate(data):
        (tmp_path / f"d{i}.png").write_bytes(d)
    api = imgcls.predict(run, [str(tmp_path / f"d{i}.png") for i in range(3)], top_k=2)
    for p, a in zip(preds, api):
        assert set(p) == set(a) == {"file", "label", "probability", "top_k"}
        assert [set(c) for c in p["top_k"]] == [set(c) for c in a["top_k"]]
        assert p["label"] == a["label"]
        assert p["probability"] == pytest.approx(a["probability"], abs=1e-4)


def test_predict_multipart_answers_each_file(http, images):
    good = encode(images[0], "PNG")
    files = [("files", ("a.png", good, "image/png")),
             ("files", ("bad.png", b"not an image", "image/png")),
             ("files", ("c.png", encode(images[1], "JPEG"), "image/jpeg"))]
    r = http.post("/predict", files=files, params={"top_k": 3})
    assert r.status_code == 200, r.text
    a, bad, c = r.json()["predictions"]
    assert a["file"] == "a.png" and len(a["top_k"]) == 3 and "error" not in a
    assert c["file"] == "c.png" and len(c["top_k"]) == 3 and "error" not in c
    assert set(bad) == {"file", "error"} and bad["error"].startswith("bad.png: ")
    # none readable: 400, naming each file
    r = http.post("/predict", files=[("files", ("x.png", b"", "image/png")),
                                     ("files", ("y.png", b"nope", "image/png"))])
    assert r.status_code == 400
    assert r.json()["error"].startswith("x.png: ") and "; y.png: " in r.json()["error"]


def test_top_level_classification_parameter(http, images):
    x = tensor(images[:2])
    r = http.post("/v2/models/digits/infer",
                  json={"inputs": [x], "parameters": {"classification": 3}})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [2, 3]
    assert all(len(s.split(":")) == 3 for s in out["data"])
    # with outputs named, it applies to each of them unless the output says otherwise
    r = http.post("/v2/models/digits/infer", json={
        "inputs": [x], "parameters": {"classification": 3},
        "outputs": [{"name": "probabilities"}]})
    assert r.json()["outputs"][0]["shape"] == [2, 3]
    r = http.post("/v2/models/digits/infer", json={
        "inputs": [x], "parameters": {"classification": 3},
        "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}]})
    assert r.json()["outputs"][0]["shape"] == [2, 1]  # the output's own parameter wins
    r = http.post("/v2/models/digits/infer", json={
        "inputs": [x], "parameters": {"classification": 3},
        "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}]})
    assert r.json()["outputs"][0]["shape"] == [2, 10]  # 0: the probabilities themselves
    r = http.post("/v2/models/digits/infer",
                  json={"inputs": [x], "parameters": {"classification": -1}})
    assert r.status_code == 400 and "classification" in r.json()["error"]


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_logits_of_the_exported_model_are_served(run, images, backend):
    """A client written against model.onnx asks for its outputs by name, logits included."""
    import onnxruntime as ort

    probs, logits = ort.InferenceSession(str(run / "model.onnx")).run(None, {"images": images})
    with running(create_app(load_predictor(run, backend=backend), "d")) as (url, _, _):
        c = triton.InferenceServerClient(url=url)
        inp = triton.InferInput("images", list(images.shape), "UINT8")
        inp.set_data_from_numpy(images)
        res = c.infer("d", [inp], outputs=[triton.InferRequestedOutput("logits"),
                                           triton.InferRequestedOutput("probabilities")])
        top = c.infer("d", [inp], outputs=[triton.InferRequestedOutput("logits",
                                                                       class_count=2)])
        c.close()
    np.testing.assert_allclose(res.as_numpy("logits"), logits, atol=1e-4)
    np.testing.assert_allclose(res.as_numpy("probabilities"), probs, atol=1e-5)
    best = [row[0].decode().split(":") for row in top.as_numpy("logits")]
    assert [int(i) for _, i, _ in best] == logits.argmax(1).tolist()
    np.testing.assert_allclose([float(v) for v, _, _ in best], logits.max(1), atol=1e-4)


def test_openapi_schema_without_cdn_pages(http):
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v2/models/{model_name}/infer", "/predict", "/v2/health/ready"} <= set(paths)
    # FastAPI's /docs and /redoc load their scripts from a CDN (blank offline): not served
    assert http.get("/docs").status_code == 404
    assert http.get("/redoc").status_code == 404


# --------------------------------------------------------------------------- bad input
def bad_files(images):
    png, jpg = encode(images[0], "PNG"), encode(images[0], "JPEG")
    rng = np.random.default_rng(0)
    return {
        "zero bytes": b"",
        "truncated PNG": png[: len(png) // 2],
        "truncated JPEG": jpg[: len(jpg) // 2],
        "random bytes": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "20000x20000 PNG bomb": png_header_only(20000, 20000),
        "text file": b"name,label\nthis is not an image\n",
    }


def test_malformed_files_are_400_within_a_second(http, images):
    for what, data in bad_files(images).items():
        t0 = time.perf_counter()
        b64 = {"name": "images", "datatype": "BYTES", "shape": [1],
               "data": [base64.b64encode(data).decode()]}
        r = infer_json(http, [b64])
        assert r.status_code == 400, (what, r.text)
        assert "image 0" in r.json()["error"], what
        r = http.post("/predict", files=[("files", ("x.png", data, "image/png"))])
        assert r.status_code == 400 and r.json()["error"].startswith("x.png: "), (what, r.text)
        assert time.perf_counter() - t0 < 1.0, what
    bomb = bad_files(images)["20000x20000 PNG bomb"]
    assert "over the limit" in http.post("/predict", files=[("files", ("b.png", bomb))]
                                         ).json()["error"]


def test_bad_tensors_are_400(http, images):
    x = images[:2]
    cases = {
        "wrong datatype": [tensor(x.astype(np.int64), "INT64")],
        "shape mismatch": [tensor(np.zeros((1, 1, 9, 9), np.uint8))],
        "wrong channels": [tensor(np.zeros((1, 3, 8, 8), np.uint8))],
        "data do not fit the shape": [dict(tensor(x), shape=[3, 1, 8, 8])],
        "uint8 out of range": [dict(tensor(x), data=[300] * x.size)],
        "floats as uint8": [dict(tensor(x), data=[0.5] * x.size)],
        "fp32 out of range": [dict(tensor(x, "FP32"), data=[-1.0] * x.size)],
        "strings as pixels": [dict(tensor(x), data=["a"] * x.size)],
        "unknown input": [tensor(x, name="pixels")],
        "two inputs": [tensor(x), tensor(x)],
        "no data": [{"name": "images", "datatype": "UINT8", "shape": [1, 1, 8, 8]}],
        "negative shape": [dict(tensor(x), shape=[-2, 1, 8, 8])],
        "bytes not base64": [{"name": "images", "datatype": "BYTES", "shape": [1],
                              "data": ["%%%"]}],
    }
    for what, inputs in cases.items():
        r = infer_json(http, inputs)
        assert r.status_code == 400 and "error" in r.json(), (what, r.text)
    for body in (b"{not json", b"[1, 2]", b"[" * 100000 + b"]" * 100000, b"\xff\xfe"):
        r = http.post("/v2/models/digits/infer", content=body)
        assert r.status_code == 400, (body[:10], r.text)
    r = infer_json(http, [tensor(x)], outputs=[{"name": "scores"}])
    assert r.status_code == 400 and "unknown output" in r.json()["error"]
    assert "'logits'" in r.json()["error"]  # the error names the outputs there are
    # binary data whose declared size is a lie
    head = json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [2, 1, 8, 8],
                                   "parameters": {"binary_data_size": 128}}]}).encode()
    r = http.post("/v2/models/digits/infer", content=head + b"\0" * 100,
                  headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 400
    r = http.post("/v2/models/digits/infer", content=head,
                  headers={"Inference-Header-Content-Length": "99999"})
    assert r.status_code == 400
    r = http.post("/predict")
    assert r.status_code == 400


def test_unknown_model_and_route_are_404(http, images, triton_client):
    assert infer_json(http, [tensor(images[:1])], model="other").status_code == 404
    r = http.get("/v2/models/other/ready")
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    assert http.get("/v2/models/digits/versions/7").status_code == 404
    assert http.get("/nothing/here").json() == {"error": "Not Found"}
    inp = triton.InferInput("images", [1, 1, 8, 8], "UINT8")
    inp.set_data_from_numpy(images[:1])
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton_client.infer("other", [inp])


def test_metrics_count_requests_and_nothing_was_5xx(http):
    text = http.get("/metrics").text
    assert 'imgcls_requests_total{route="/v2/models/{model_name}/infer",status="200"}' in text
    assert 'status="400"' in text and 'status="404"' in text
    assert "imgcls_batch_size_bucket" in text and "imgcls_request_seconds_bucket" in text
    assert "imgcls_ready 1.0" in text
    codes = {line.split('status="')[1][:3] for line in text.splitlines()
             if line.startswith("imgcls_requests_total{")}
    assert not {c for c in codes if c.startswith("5")}, codes


# --------------------------------------------------------------------------- limits
class SlowPredictor(Predictor):
    """Two classes, answers after ``delay`` seconds: makes queues and timeouts observable."""

    backend = "slow"

    def __init__(self, delay):
        super().__init__(Preprocess(8, 1, [0.5], [0.25], ["a", "b"]), "slow")
        self.delay = delay

        self.batches = []

    def __call__(self, x):
        self.batches.append(len(x))
        time.sleep(self.delay)
        return np.full((len(x), 2), 0.5, np.float32)


def slow_request(url, results):
    body = {"inputs": [tensor(np.zeros((1, 1, 8, 8), np.uint8))]}
    r = httpx.post(f"http://{url}/v2/models/slow/infer", json=body, timeout=10)
    results.append(r.status_code)


def test_requests_arriving_while_the_model_runs_share_a_batch():
    predictor = SlowPredictor(0.3)
    with running(create_app(predictor, max_batch=8)) as (url, _, _):
        results = []
        threads = [threading.Thread(target=slow_request, args=(url, results)) for _ in range(5)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join()
    assert results == [200] * 5
    assert predictor.batches[0] == 1 and max(predictor.batches) > 1  # warm-up, then batches
    assert sum(predictor.batches[1:]) == 5


def test_body_limit_is_413(images):
    app = create_app(SlowPredictor(0), max_body_mb=0.01)  # 10 KiB
    with running(app) as (url, _, _):
        host, port = url.split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:  # declared size
            s.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 100000000\r\n\r\n{")
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413") and b'"error"' in reply

        def chunks():  # no Content-Length: counted while streaming
            for _ in range(20):
                yield b" " * 1024
        r = httpx.post(f"http://{url}/v2/models/slow/infer", content=chunks())
        assert r.status_code == 413 and "over the limit" in r.json()["error"]
        ok = httpx.post(f"http://{url}/v2/models/slow/infer",
                        json={"inputs": [tensor(np.zeros((1, 1, 8, 8), np.uint8))]})
        assert ok.status_code == 200


def test_timeout_is_504_and_full_queue_is_503():
    with running(create_app(SlowPredictor(0.6), timeout_s=0.3)) as (url, _, _):
        results = []
        slow_request(url, results)
        assert results == [504]
    with running(create_app(SlowPredictor(0.3), max_batch=1, queue_size=1)) as (url, _, _):
        results = []
        threads = [threading.Thread(target=slow_request, args=(url, results)) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 503 in results and 200 in results and set(results) <= {200, 503}, results


def test_graceful_shutdown_finishes_in_flight_requests():
    with running(create_app(SlowPredictor(0.5))) as (url, server, thread):
        results = []
        t = threading.Thread(target=slow_request, args=(url, results))
        t.start()
        time.sleep(0.2)  # the request is being processed
        server.should_exit = True
        t.join(5)
        thread.join(5)
        assert results == [200] and not thread.is_alive()


def test_models_are_not_loaded_from_urls():
    with pytest.raises(imgcls.ImgclsError, match="local paths only"):
        load_predictor("https://example.com/model.onnx")
