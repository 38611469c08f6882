"""What dynamic batching buys on a compute-heavy model.

Serves an MLP 1024-4096-4096-1000 (float32, seeded random weights, ~100 MB) with lockgate twice
in one run — once unbatched, once with dynamic batching (max_batch_size 32, max queue delay
2 ms) — and drives each with ``--clients`` keep-alive clients sending batch-1 JSON requests.
Prints requests/s, p50/p99 and the batched/unbatched throughput ratio.

    .venv/bin/python benchmarks/batching.py [--seconds 8] [--clients 32]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import itertools
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_overhead import Phase, drive, http_request, run_async, wait_ready  # noqa: E402

SERVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from lockgate.runtime.predictor import Predictor
    from lockgate.serve import ServedModel, create_app, run_server
    from lockgate.serve.batching import BatchingConfig
    model = Path(sys.argv[1]).read_bytes()
    batching = BatchingConfig(max_batch_size=32, max_queue_delay_us=2000) \\
        if sys.argv[2] == "batched" else None
    app = create_app([ServedModel("mlp", 1, lambda: Predictor(model), batching=batching)])
    try:
        run_server(app, "127.0.0.1", 0,
                   on_started=lambda host, port: print(f"LISTENING {port}", flush=True))
    except KeyboardInterrupt:
        pass
""")


def build_big_mlp(sizes: tuple[int, ...] = (1024, 4096, 4096, 1000)) -> bytes:
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev = "x"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"B{i}")]
        out = f"h{i}" if i < len(sizes) - 2 else "y"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [f"g{i}" if out != "y"
                                                                           else "y"]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "big_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])], inits)
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                                  ).SerializeToString()


def run(model: Path, mode: str, clients: int, seconds: float, body: bytes) -> Phase:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(model), mode],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        raw = http_request("POST", "/v2/models/mlp/infer", body)

        async def go() -> Phase:
            await wait_ready(port)
            return await drive(port, raw, clients, seconds, f"{mode}, {clients} clients")

        return run_async(go())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    x = np.random.default_rng(1).normal(size=(1, 1024)).astype(np.float32)
    import json

    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1024], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "big.onnx"
        model.write_bytes(build_big_mlp())
        plain = run(model, "unbatched", args.clients, args.seconds, body)
        batched = run(model, "batched", args.clients, args.seconds, body)
    print(f"dynamic batching: MLP 1024-4096-4096-1000, batch-1 JSON, {args.clients} clients, "
          f"{args.seconds:g} s; {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'mode':<28}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}")
    for p in (plain, batched):
        print(f"{p.name:<28}{p.rate:>12.1f}{p.pct(50):>9.2f}{p.pct(99):>9.2f}")
    print(f"batched / unbatched throughput: {batched.rate / plain.rate:.2f}")


if __name__ == "__main__":
    main()
