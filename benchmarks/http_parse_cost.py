"""What lockgate's HTTP layer costs per request, from the bytes read to the answer written.

Times ``_Connection.data_received`` of :mod:`lockgate.serve.http` on one typical request (a
batch-1 OIP JSON infer request with 7 header fields, kept alive) against a stub transport and
an inline stub inference service, so the figure is the parser callbacks, the checks on the head,
the dispatch and the answer's head: no socket, no model. Each side runs in its own process (the
``before`` side from a git revision checked out into a temporary worktree, with this venv), in
alternating rounds; the best round of each is kept, as this shared machine drifts between
minutes. Prints both figures (µs per request) and ``after / before``.

    .venv/bin/python benchmarks/http_parse_cost.py --before 3178bf7 [--rounds 5] [--requests 100000]

Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

INNER = textwrap.dedent('''
    import asyncio, json, sys, time
    from lockgate.serve import http as lh
    from lockgate.serve.inference import Answer

    ANSWER = Answer(200, b'{"model_name":"m","outputs":[]}')

    class Service:
        authorize = None

        def infer(self, *args, **kwargs):
            return ANSWER

        def reserve(self, size):
            return None

        def refuse(self, model, version, exc):
            raise AssertionError(exc)

    class Transport:
        def __init__(self):
            self.written = 0

        def get_extra_info(self, name, default=None):
            return {"peername": ("127.0.0.1", 50000),
                    "sockname": ("127.0.0.1", 8000)}.get(name, default)

        def write(self, data):
            self.written += len(data)

        def get_write_buffer_size(self):
            return 0

        def is_closing(self):
            return False

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

        def close(self):
            raise AssertionError("closed")

        abort = close

    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                   "data": [0.5] * 64}]}).encode()
    request = (b"POST /v2/models/mlp/infer HTTP/1.1\\r\\nHost: 127.0.0.1:8000\\r\\n"
               b"User-Agent: bench/1.0\\r\\nAccept: */*\\r\\nAccept-Encoding: gzip\\r\\n"
               b"Connection: keep-alive\\r\\nContent-Type: application/json\\r\\n"
               b"Content-Length: %d\\r\\n\\r\\n" % len(body)) + body

    async def main(n):
        server = lh.HTTPServer(None, Service())
        conn = lh._Connection(server)
        transport = Transport()
        conn.connection_made(transport)
        feed = conn.data_received
        for _ in range(2000):
            feed(request)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                feed(request)
            best = min(best, (time.perf_counter() - start) / n)
        assert transport.written > 0
        print(best * 1e6)

    asyncio.run(main(int(sys.argv[1])))
''')


def _measure(src: Path, requests: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", INNER, str(requests)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", required=True, help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=20000, help="requests per timed run")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-parse-cost-"))
    tree = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                    args.before], check=True, capture_output=True)
    try:
        before: list[float] = []
        after: list[float] = []
        for r in range(args.rounds):
            sides = [("before", tree / "src", before), ("after", ROOT / "src", after)]
            for name, src, figures in sides if r % 2 == 0 else sides[::-1]:
                figures.append(_measure(src, args.requests))
                print(f"round {r + 1} {name:<6} {figures[-1]:6.2f} µs/request", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)
    b, a = min(before), min(after)
    print(f"\ndata_received of one 7-header batch-1 infer request (best of {args.rounds} "
          f"rounds): before ({args.before}) {b:.2f} µs, after (working tree) {a:.2f} µs, "
          f"after / before {a / b:.3f}")


if __name__ == "__main__":
    main()
