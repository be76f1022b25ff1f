"""Load test of `imgcls serve` from a separate process: concurrency 1, 8 and 32 for a bounded
time each, 28x28 Fashion-MNIST images as UINT8 tensors (Open Inference Protocol v2 JSON).
Records requests/s, p50 and p99 latency and errors, one row per concurrency appended to
benchmarks/serve_results.jsonl. Loopback only.

    python benchmarks/serve.py [--run RUN] [--seconds 10] [--backend onnx]
"""

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from _record import append_row

import imgcls
from imgcls.data.sources import load_source

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    lat, errors, stop = [], 0, time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, k: int) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                async with session.post(url, data=bodies[i % len(bodies)],
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            lat.append(time.perf_counter() - t)
            i += concurrency

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session, k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    lat.sort()
    return {"concurrency": concurrency, "requests": len(lat), "requests_per_s": len(lat) / wall,
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "errors": errors}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run", default=None, help="run folder (default: train one on the sample)")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--backend", default="onnx", choices=("onnx", "torch"))
    args = p.parse_args()
    run = args.run or str(imgcls.train(data="sample", epochs=2, out=str(HERE / "_work"),
                                       progress=False, log=lambda _: None).path)
    if args.backend == "onnx" and not (Path(run) / "model.onnx").exists():
        from imgcls.export import export_model

        export_model(run, "onnx", log=lambda _: None)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "imgcls", "serve", run, "--port", str(port),
                               "--backend", args.backend], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        name = Path(run).name
        for _ in range(300):
            try:
                import urllib.request

                with urllib.request.urlopen(f"{base}/v2/models/{name}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        images = load_source("sample").test.images[:64]
        bodies = [json.dumps({"inputs": [{"name": "images", "datatype": "UINT8",
                                          "shape": [1, 1, 28, 28],
                                          "data": img.flatten().tolist()}]}).encode()
                  for img in images]
        url = f"{base}/v2/models/{name}/infer"
        rows = [asyncio.run(load(url, bodies, c, args.seconds)) for c in (1, 8, 32)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps({"backend": args.backend, "rows": rows}, indent=1))
    for r in rows:
        append_row(HERE / "serve_results.jsonl",
                   {"backend": args.backend, "run": run, "seconds": args.seconds, **r})
    for r in rows:
        print(f"concurrency {r['concurrency']:>2}: {r['requests_per_s']:,.0f} req/s, p50 "
              f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}")


if __name__ == "__main__":
    main()
