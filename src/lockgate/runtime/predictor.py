"""ONNX Runtime behind one small class. Telemetry is off before onnxruntime is imported."""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from lockgate.config.providers import ProviderSet
from lockgate.errors import InvalidInputError, ServeError
from lockgate.runtime.onnxmeta import signature_of
from lockgate.runtime.providers import Placement, open_session, provider_set
from lockgate.types import Signature

__all__ = ["Predictor", "available_providers"]

ort.disable_telemetry_events()

#: Providers that compute in device memory: a run binds its arrays to the session (IO binding)
#: and its outputs to that memory, then copies them back once, instead of letting each run
#: allocate and copy per output. The value is where outputs are bound ("cpu": ONNX Runtime
#: copies them itself).
_BOUND_OUTPUTS = {"CUDAExecutionProvider": "cuda", "ROCMExecutionProvider": "cpu"}


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def _np_dtype(name: str) -> np.dtype[Any] | None:
    """The numpy dtype for a signature dtype name; None where numpy has no such type."""
    try:
        return np.dtype(name)
    except TypeError:
        return None


class Predictor:
    """An ORT session over one ONNX model, with its signature.

    ``model`` is the serialized model or the path of an ONNX file (ONNX Runtime reads the file
    itself, so the caller need not hold the bytes). ``signature``, when the caller has it already
    (read off the same model), saves parsing the whole model, weights included, a second time.
    ``spin=False`` stops ONNX Runtime's worker threads from spinning while they wait for the
    next run: a server wants them spinning (lower latency); a caller that alternates runs with
    other CPU work, as the parity check does with the source framework, does not (the spinning
    threads take the cores that work needs).

    ``providers`` is a :class:`~lockgate.config.providers.ProviderSet` (or a list of ONNX
    Runtime provider names); the session is checked to use them (see
    :mod:`lockgate.runtime.providers`) and :attr:`placement` says what it uses.

    ``run`` takes a mapping of input name to array and returns a dict of output name to array.
    Wrong names, dtypes or ranks raise :class:`InvalidInputError`; runtime failures
    raise :class:`ServeError`.
    """

    def __init__(
        self,
        model: bytes | Path,
        *,
        providers: ProviderSet | Sequence[str] | None = None,
        intra_op_threads: int = 0,
        signature: Signature | None = None,
        spin: bool = True,
    ) -> None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        self.placement: Placement
        self._session, self.placement = open_session(model, opts, provider_set(providers))
        if signature is None:
            signature = signature_of(
                onnx.load_model_from_string(model) if isinstance(model, bytes)
                else onnx.load_model(str(model), load_external_data=False))
        self.signature: Signature = signature
        self._input_names = [i.name for i in self._session.get_inputs()]
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._input_set = frozenset(self._input_names)
        self._output_set = frozenset(self._output_names)
        # (name, dtype, dims, rank, (index, size) of each fixed dim) per input, precomputed
        # for the per-request checks.
        self._checks = [
            (spec.name, _np_dtype(spec.dtype), spec.shape, len(spec.shape),
             tuple((i, d) for i, d in enumerate(spec.shape) if isinstance(d, int)))
            for spec in self.signature.inputs
        ]
        self._binding = self._binding_device()
        # A CPU-only session's runs call ONNX Runtime's C++ run directly: what the Python
        # wrapper adds (input names, checked above; WebGPU graph capture; OrtValue ownership;
        # falling back from a failing GPU provider) does not apply to numpy inputs on the CPU.
        inner = getattr(self._session, "_sess", None)
        self._direct_run: Any = inner.run if inner is not None and \
            self._session.get_providers() == ["CPUExecutionProvider"] else None

    def _binding_device(self) -> tuple[str, int] | None:
        """Where a run binds its outputs, when the session runs on a device provider and every
        output is a tensor (sequences and maps cannot be bound); None: plain runs."""
        used = self._session.get_providers()
        device = next((_BOUND_OUTPUTS[p] for p in used if p in _BOUND_OUTPUTS), None)
        if device is None or not all(
                str(o.type).startswith("tensor(") for o in self._session.get_outputs()):
            return None
        options = self._session.get_provider_options()
        name = next(p for p in used if p in _BOUND_OUTPUTS)
        device_id = int(options.get(name, {}).get("device_id", 0) or 0)
        return device, device_id if device != "cpu" else 0

    @property
    def io_binding(self) -> bool:
        """Whether runs go through ONNX Runtime's IO binding (CUDA and ROCm sessions)."""
        return self._binding is not None

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return list(self._session.get_providers())

    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    def run(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        if inputs.keys() != self._input_set:
            missing = [n for n in self._input_names if n not in inputs]
            extra = [n for n in inputs if n not in self._input_set]
            raise InvalidInputError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}",
                hint=f"the model takes {self._input_names}",
            )
        if outputs:
            wanted = list(outputs)
            unknown = [n for n in wanted if n not in self._output_set]
            if unknown:
                raise InvalidInputError(
                    f"unknown outputs {unknown}", hint=f"the model returns {self._output_names}"
                )
        else:
            wanted = self._output_names
        for name, dtype, shape, rank, fixed in self._checks:
            arr = inputs[name]
            if dtype is not None and arr.dtype is not dtype and arr.dtype != dtype:
                raise InvalidInputError(
                    f"input {name!r} has dtype {arr.dtype}, the model wants {dtype}"
                )
            got = arr.shape
            fits = len(got) == rank
            if fits:
                for i, want in fixed:  # a loop, not all(...): no generator per request
                    if got[i] != want:
                        fits = False
                        break
            if not fits:
                raise InvalidInputError(
                    f"input {name!r} has shape {list(arr.shape)}, the model wants {list(shape)}"
                )
        try:
            if self._direct_run is not None:
                result = self._direct_run(wanted, inputs if type(inputs) is dict
                                          else dict(inputs), None)
            elif self._binding is not None:
                result = self._run_bound(wanted, inputs, *self._binding)
            else:
                result = self._session.run(wanted,
                                           inputs if type(inputs) is dict else dict(inputs))
        except Exception as exc:
            raise ServeError(f"ONNX Runtime failed to run the model: {exc}") from exc
        return {n: v if type(v) is np.ndarray else np.asarray(v)  # sequences, maps
                for n, v in zip(wanted, result, strict=True)}

    def _run_bound(self, wanted: Sequence[str], inputs: Mapping[str, np.ndarray],
                   device: str, device_id: int) -> list[Any]:
        """One run through IO binding: inputs bound from host memory (ONNX Runtime copies them
        to the device once), outputs bound to ``device`` and copied back after the run."""
        binding = self._session.io_binding()
        for name, arr in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name in wanted:
            binding.bind_output(name, device, device_id)
        self._session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run(inputs)
