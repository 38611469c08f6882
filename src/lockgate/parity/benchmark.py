"""Runtime comparison: the source framework's own inference against ONNX Runtime, measured on
this machine for one version — the "Perf" and "Interop" columns of a framework scorecard.

Runners: the framework eager (PyTorch ``no_grad``, Keras ``training=False``, a JAX function
dispatched op by op, scikit-learn ``predict_proba``/``predict``) and compiled where the framework
offers it (``torch.compile``, ``tf.function``, ``jax.jit``); ONNX Runtime with one intra-op
thread and all graph optimisations, with its default threads, with basic optimisations only, and
with none. Each runs the version's recorded sample (its first row repeated) at batch 1 and at a
larger batch: warm-up runs first (a compiled runner's first call is reported as its compile
time), then back-to-back runs for a fixed time; p50 latency and rows per second are reported.
No figure is judged: this measures, it does not gate.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lockgate.errors import Error, InvalidInputError

__all__ = ["load_factory", "measure", "runtime_comparison"]

Runner = Callable[[Sequence[np.ndarray]], Any]


def load_factory(spec: str, args: Sequence[str] = ()) -> tuple[object, object]:
    """Call ``package.module:function(*args)`` (importable from the current directory) and
    return its ``(model, sample_input)``."""
    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise InvalidInputError(f"expected package.module:function, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InvalidInputError(f"cannot import {mod_name!r}: {exc}") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise InvalidInputError(f"{mod_name} has no function {fn_name!r}")
    result = fn(*args)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise InvalidInputError(f"{spec} must return (model, sample_input)")
    return result[0], result[1]


def measure(run: Callable[[], Any], *, seconds: float, rows: int, warmup: int = 3
            ) -> dict[str, float]:
    """Warm-up (the first call timed apart), then back-to-back calls for ``seconds``."""
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        run()
    lat: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(lat) < 5:
        t = time.perf_counter()
        run()
        lat.append(time.perf_counter() - t)
    p50 = statistics.median(lat)
    return {"first_call_ms": first * 1000, "p50_ms": p50 * 1000,
            "rows_per_s": rows / p50 if p50 > 0 else 0.0, "runs": float(len(lat))}


def _source_runners(framework: str, model: Any, compile_: bool
                    ) -> list[tuple[str, Runner | str]]:
    """Named runners of the source model; a string instead of a runner says why a variant is
    unavailable here."""
    out: list[tuple[str, Runner | str]] = []
    if framework == "pytorch":
        import torch

        model.eval()

        def torch_runner(m: Any) -> Runner:
            def run(xs: Sequence[np.ndarray]) -> Any:
                with torch.no_grad():
                    return m(*[torch.from_numpy(np.ascontiguousarray(x)) for x in xs])
            return run

        out.append(("pytorch eager", torch_runner(model)))
        if compile_:
            try:
                out.append(("torch.compile", torch_runner(torch.compile(model))))
            except Exception as exc:  # no compiler toolchain, unsupported platform
                out.append(("torch.compile", f"unavailable: {exc}"))
    elif framework in ("keras", "tensorflow"):
        def call(xs: Sequence[np.ndarray]) -> Any:
            try:
                return model(*xs, training=False)
            except TypeError:
                return model(*xs)

        out.append((f"{framework} eager", call))
        if compile_:
            try:
                import tensorflow as tf

                fn = tf.function(call)
                out.append(("tf.function", lambda xs: fn([tf.constant(x) for x in xs])))
            except ImportError:
                out.append(("tf.function", "unavailable: tensorflow is not installed"))
    elif framework == "jax":
        import jax

        def eager(xs: Sequence[np.ndarray]) -> Any:
            with jax.disable_jit():
                return jax.block_until_ready(model(*xs))  # type: ignore[no-untyped-call]

        out.append(("jax eager (op by op)", eager))
        if compile_:
            jitted = jax.jit(lambda *xs: model(*xs))
            out.append(("jax.jit", lambda xs: jax.block_until_ready(  # type: ignore[no-untyped-call]
                jitted(*xs))))
    elif framework in ("scikit-learn", "xgboost", "lightgbm", "catboost"):
        method = getattr(model, "predict_proba", None) or model.predict
        out.append((framework, lambda xs: method(xs[0])))
    else:
        raise InvalidInputError(f"no source runner for framework {framework!r}",
                                hint="compare needs the model the version was converted from")
    return out


def _ort_runners(model_bytes: bytes) -> list[tuple[str, Callable[[Mapping[str, Any]], Any]]]:
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel
    settings = [("onnxruntime 1 thread, all optimisations", 1, level.ORT_ENABLE_ALL),
                ("onnxruntime default threads, all optimisations", 0, level.ORT_ENABLE_ALL),
                ("onnxruntime 1 thread, basic optimisations", 1, level.ORT_ENABLE_BASIC),
                ("onnxruntime 1 thread, no optimisation", 1, level.ORT_DISABLE_ALL)]
    out: list[tuple[str, Callable[[Mapping[str, Any]], Any]]] = []
    for name, threads, opt in settings:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.graph_optimization_level = opt
        so.log_severity_level = 3
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        out.append((name, functools.partial(_ort_run, sess)))
    return out


def _ort_run(session: Any, feeds: Mapping[str, Any]) -> Any:
    return session.run(None, dict(feeds))


def runtime_comparison(model: Any, framework: str, model_bytes: bytes,
                       sample: Mapping[str, np.ndarray], *, batch: int = 32,
                       seconds: float = 1.0, compile_: bool = True) -> dict[str, Any]:
    """Measure every runner at batch 1 and ``batch`` on ``sample`` (inputs by ONNX name, in
    the model's input order)."""
    if batch < 2:
        raise InvalidInputError("the larger batch must be at least 2")
    names = list(sample)
    rows_out: list[dict[str, Any]] = []
    runners = _source_runners(framework, model, compile_)
    ort_runners = _ort_runners(model_bytes)
    for size in (1, batch):
        feeds = {n: np.repeat(np.asarray(sample[n])[:1], size, axis=0) for n in names}
        xs = [feeds[n] for n in names]
        for label, runner in runners:
            if isinstance(runner, str):
                rows_out.append({"runtime": label, "batch": size, "error": runner})
                continue
            try:
                stats = measure(functools.partial(runner, xs), seconds=seconds, rows=size)
            except Error:
                raise
            except Exception as exc:  # a variant the framework cannot run here
                rows_out.append({"runtime": label, "batch": size,
                                 "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                continue
            rows_out.append({"runtime": label, "batch": size, **stats})
        for label, ort_run in ort_runners:
            stats = measure(functools.partial(ort_run, feeds), seconds=seconds, rows=size)
            rows_out.append({"runtime": label, "batch": size, **stats})
    return {"framework": framework, "batch_sizes": [1, batch], "seconds": seconds,
            "machine": {"system": platform.system(), "machine": platform.machine(),
                        "cpus": os.cpu_count(), "python": platform.python_version()},
            "results": rows_out}
