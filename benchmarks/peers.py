"""lockgate against the servers teams use today, on the same model, the same box and wrk.

Servers (``--servers``, default all but lockgate-workers; each on 127.0.0.1 in its own
process group, one model worker, the MLP 64-256-256-10 float32 at batch 1 as JSON; details in
``peer_servers.py``):

* bare:           uvicorn (uvloop, httptools) + Starlette + orjson + ONNX Runtime: parse,
                  run, answer; no OIP, no validation: the floor of a Python HTTP server;
* lockgate:       ``lockgate serve mlp@1 --workers 1`` as a user starts it: its own HTTP
                  layer, the request hardening, OIP v2 validation, metrics, auth off (the
                  default), one worker process like every other server here;
* lockgate-token: the same with ``[serve] auth = "token"`` (a Bearer token per request);
* lockgate-workers (only when named in ``--servers``): ``lockgate serve`` with its default
                  of one worker process per core;
* pytriton:       Triton 2.51 (the server binary in nvidia-pytriton 0.7.0) and its Python
                  backend calling ONNX Runtime, dynamic batching on (max batch 32);
* mlserver:       MLServer 1.7 with a custom ONNX Runtime runtime (one parallel worker);
* torchserve:     TorchServe 0.12 (Java frontend, Python worker) on a TorchScript trace of
                  the same weights;
* mlflow:         ``mlflow models serve`` (3.17) on the model saved with ``mlflow.onnx``;
* bentoml:        a BentoML 1.4 ``@bentoml.service`` calling ONNX Runtime.

Each peer lives in its own venv under ``benchmarks/.peers/<name>`` (git-ignored), made by
``--setup [NAMES]``; a peer whose venv is missing is skipped and said so. The bare handler and
lockgate run in the project's venv.

Load: wrk (one thread, ``wrk_post.lua``) at 1 and ``--clients`` connections, ``--seconds``
each, after a ``--warmup`` at ``--clients``. Before each server is loaded, one probe request
must answer 200 with the reference's first logit (ONNX Runtime in this process). Without wrk
the project's asyncio client is used instead, with a loud note: it caps the faster servers.
Every selected server is measured once per round, ``--rounds`` alternating rounds in one run
(every other round in reverse order); the closest pair, the bare handler and lockgate, is
compared round by round (a shared machine drifts between minutes). Printed: lockgate/bare
throughput at 32 and at 1 connection, the p50 difference at 1 connection in microseconds (the
target: lockgate p50 <= bare p50 + 20 us), lockgate/PyTriton, token auth's cost and lockgate
against every server (medians of rounds).

The measurement (one line, on a quiet machine; 5 rounds of 10 s phases, about 25 minutes for
all eight servers; the results also go to ``benchmarks/.peers/results-<UTC time>.json``):

    .venv/bin/python benchmarks/peers.py --setup && .venv/bin/python benchmarks/peers.py

A short check that every server works end to end: ``--seconds 2 --warmup 1 --rounds 1``.

Not part of ``make test``.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peer_load import WRK, Load, close, load, probe  # noqa: E402
from peer_servers import BY_NAME, DEFAULT, SERVERS, Context, Running, Server, free_port  # noqa: E402
from peer_setup import PEER_PACKAGES, setup  # noqa: E402
from serve_overhead import build_mlp, session  # noqa: E402

Rounds = list[tuple[Load, Load]]
NO_WRK = ("NOTE: wrk is not installed: the load comes from the project's asyncio client, "
          "which saturates before the faster servers do; these figures cap them "
          "(apt-get install wrk)")


def _prepare(tmp: Path, names: list[str]) -> tuple[Context, np.ndarray, float]:
    """The model, its weights (for TorchScript), the input and the reference first logit."""
    model_bytes = build_mlp()
    model = tmp / "mlp.onnx"
    model.write_bytes(model_bytes)
    weights = tmp / "mlp_weights.npz"
    inits = onnx.load_from_string(model_bytes).graph.initializer
    arrays: dict[str, Any] = {t.name: numpy_helper.to_array(t) for t in inits}
    np.savez(weights, **arrays)
    x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
    reference = float(session(model_bytes, 1).run(None, {"x": x})[0][0, 0])
    bodies = tmp / "bodies"
    bodies.mkdir()
    for name in names:
        (bodies / f"{name}.json").write_bytes(BY_NAME[name].body(x))
    return Context(tmp, model, weights), x, reference


def measure(server: Server, ctx: Context, reference: float, args: argparse.Namespace
            ) -> tuple[Load, Load] | str:
    """Start, probe, warm up, load at 1 and at --clients connections, stop."""
    running = Running(server, ctx, free_port())
    try:
        body_file = ctx.tmp / "bodies" / f"{server.name}.json"
        auth = f"Bearer {ctx.token}" if server.auth else ""
        url = f"http://127.0.0.1:{running.port}{server.path}"
        status, doc = probe(url, body_file.read_bytes(),
                            {"Authorization": auth} if auth else {}, args.start_limit)
        if status != 200:
            return (f"failed: probe answered {status or 'nothing'} "
                    f"(exit {running.proc.poll()}): {running.log_tail()}")
        try:
            got = server.first(doc)
        except (KeyError, IndexError, TypeError, ValueError):
            return f"failed: unexpected answer {json.dumps(doc)[:200]}"
        if not close(got, reference):
            return f"failed: first logit {got!r}, the reference is {reference!r}"
        if auth:  # the token variant must refuse a request without one
            status, _ = probe(url, body_file.read_bytes(), {}, 1)
            if status != 401:
                return f"failed: a request without a token answered {status}, not 401"
        if args.warmup > 0:
            load(running.port, server.path, body_file, args.clients, args.warmup, auth)
        one = load(running.port, server.path, body_file, 1, args.seconds, auth)
        many = load(running.port, server.path, body_file, args.clients, args.seconds, auth)
        return one, many
    finally:
        running.stop()


def run(names: list[str], args: argparse.Namespace) -> dict[str, Rounds | str]:
    results: dict[str, Rounds | str] = {}
    for name in names:
        missing = BY_NAME[name].missing()
        if missing:
            results[name] = missing
            print(f"{name}: {missing}", flush=True)
    with tempfile.TemporaryDirectory(prefix="lockgate-peers-") as tmp_name:
        ctx, _x, reference = _prepare(Path(tmp_name), names)
        for round_no in range(1, args.rounds + 1):
            # every other round in reverse: no server always follows the same one
            for name in names if round_no % 2 else names[::-1]:
                found = results.setdefault(name, [])
                if isinstance(found, str):
                    continue  # skipped, or failed in an earlier round
                try:
                    got = measure(BY_NAME[name], ctx, reference, args)
                except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
                    got = f"failed to start: {exc}"
                if isinstance(got, str):
                    results[name] = got
                    print(f"round {round_no} {name}: {got}", flush=True)
                    continue
                found.append(got)
                one, many = got
                print(f"round {round_no} {name:<15} 1 conn {one.rps:7.0f}/s p50 "
                      f"{one.p50_us:6.0f} us | {args.clients} conn {many.rps:7.0f}/s p50 "
                      f"{many.p50_us / 1000:6.2f} ms | errors {one.errors + many.errors}",
                      flush=True)
    return {name: results[name] for name in names}


def _ratios(ours: Rounds, theirs: Rounds, i: int) -> list[float]:
    return [o[i].rps / t[i].rps for o, t in zip(ours, theirs, strict=False)]


def _fmt(values: list[float], spec: str, unit: str = "") -> str:
    return (" ".join(format(v, spec) + unit for v in values)
            + f" (median {format(median(values), spec)}{unit})")


def report(results: dict[str, Rounds | str], args: argparse.Namespace) -> None:
    gen = "wrk, 1 thread" if WRK else "the asyncio client (no wrk)"
    print(f"\npeers: MLP 64-256-256-10, batch 1 JSON, {gen}, {args.seconds:g} s per phase, "
          f"{args.rounds} rounds; {platform.machine()}, {os.cpu_count()} CPUs")
    c = args.clients
    print(f"{'server':<16}{'1 conn rps':>11}{'p50 us':>8}{'p99 us':>8}{f'{c} conn rps':>12}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}   (medians over rounds)")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name:<16}{r}")
            continue
        print(f"{name:<16}{median(o.rps for o, _ in r):>11.0f}"
              f"{median(o.p50_us for o, _ in r):>8.0f}{median(o.p99_us for o, _ in r):>8.0f}"
              f"{median(m.rps for _, m in r):>12.0f}"
              f"{median(m.p50_us for _, m in r) / 1000:>8.2f}"
              f"{median(m.p99_us for _, m in r) / 1000:>8.2f}"
              f"{sum(o.errors + m.errors for o, m in r):>8}")
    ours = results.get("lockgate")
    if not isinstance(ours, list) or not ours:
        return
    bare = results.get("bare")
    if isinstance(bare, list) and bare:
        deltas = [o[0].p50_us - b[0].p50_us for o, b in zip(ours, bare, strict=False)]
        print(f"lockgate / bare, round by round: {c} conn "
              f"{_fmt(_ratios(ours, bare, 1), '.2f', 'x')}; "
              f"1 conn {_fmt(_ratios(ours, bare, 0), '.2f', 'x')}")
        verdict = "met" if median(deltas) <= 20 else "not met"
        print(f"1 conn p50, lockgate - bare: {_fmt(deltas, '+.0f', ' us')}; "
              f"target <= +20 us: {verdict}")
    for name, label in (("pytriton", "lockgate / PyTriton"),
                        ("lockgate-token", "token auth (lockgate-token / lockgate)")):
        theirs = results.get(name)
        if isinstance(theirs, list) and theirs:
            first, second = (theirs, ours) if name == "lockgate-token" else (ours, theirs)
            print(f"{label}: {c} conn {_fmt(_ratios(first, second, 1), '.2f', 'x')}; "
                  f"1 conn {_fmt(_ratios(first, second, 0), '.2f', 'x')}")
    print(f"lockgate throughput as a ratio of each server's (median; 1 conn / {c} conn):")
    for name, r in results.items():
        if name != "lockgate" and isinstance(r, list) and r:
            print(f"  vs {name:<16}{median(_ratios(ours, r, 0)):>7.2f}"
                  f"{median(_ratios(ours, r, 1)):>8.2f}")


def _as_json(results: dict[str, Rounds | str], args: argparse.Namespace) -> dict[str, Any]:
    wrk_version = ""
    if WRK:
        done = subprocess.run([WRK, "-v"], capture_output=True, text=True, check=False)
        said = (done.stdout + done.stderr).splitlines()
        wrk_version = said[0] if said else ""
    return {"seconds": args.seconds, "rounds": args.rounds, "clients": args.clients,
            "load": wrk_version or "asyncio client", "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "servers": {name: r if isinstance(r, str) else
                        [{"one": o.to_dict(), "many": m.to_dict()} for o, m in r]
                        for name, r in results.items()}}


def _names(text: str, known: list[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"unknown {what} {', '.join(unknown) or '(none)'}; known: "
                         f"{', '.join(known)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--setup", nargs="?", const=",".join(PEER_PACKAGES), metavar="NAMES",
                        help="create the peer venvs (all, or these, comma-separated) and exit")
    parser.add_argument("--servers", default=",".join(DEFAULT),
                        help="comma-separated, in the order measured (default: all but "
                             "lockgate-workers)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--clients", type=int, default=32, help="connections of the busy phase")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--start-limit", type=float, default=240.0,
                        help="seconds a server may take to answer its first request")
    parser.add_argument("--json", type=Path, help="where the results go as JSON (default: "
                        "benchmarks/.peers/results-<UTC time>.json)")
    args = parser.parse_args()
    if args.setup is not None:
        setup(_names(args.setup, list(PEER_PACKAGES), "peer"))
        return
    names = _names(args.servers, [s.name for s in SERVERS], "server")
    if WRK is None:
        print(NO_WRK, file=sys.stderr, flush=True)
    results = run(names, args)
    report(results, args)
    if WRK is None:
        print("\n" + NO_WRK)
    if args.json is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        args.json = HERE / ".peers" / f"results-{stamp}.json"
    if results:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_as_json(results, args), indent=1), encoding="utf-8")
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
