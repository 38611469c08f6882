"""Install the peer servers of ``peers.py`` into their own venvs under ``benchmarks/.peers/``.

One venv per peer, pinned to the versions the comparison is made with. Where a peer needs torch
it gets the CPU build ``torch==2.13.0+cpu`` (an unpinned torch pulls a multi-GB CUDA build).
Installs run at a lower priority (``nice``) so that a machine doing other work stays usable.

    .venv/bin/python benchmarks/peers.py --setup [pytriton,mlserver,...]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers"

ORT = "onnxruntime==1.32.0"

# what each peer's venv holds; the bare handler and lockgate run in the project's own venv
PEER_PACKAGES: dict[str, list[str]] = {
    # MLflow 3.18.0 is listed but its mlflow-skinny==3.18.0 is not installable
    "mlflow": ["mlflow==3.17.2", "onnx==1.23.2", ORT, "numpy"],
    "bentoml": ["bentoml==1.4.40", ORT, "numpy"],
    # the Triton 2.51 server binary and its Python backend ship inside nvidia-pytriton
    "pytriton": ["nvidia-pytriton==0.7.0", ORT, "numpy"],
    # uvloop>=0.22 makes MLServer 1.7's inference-pool worker die at model load
    "mlserver": ["mlserver==1.7.1", "uvloop<0.22", ORT, "numpy"],
    # pyyaml: an undeclared import of ts/utils/util.py; the model is TorchScript
    "torchserve": ["torchserve==0.12.0", "torch-model-archiver==0.12.0", "torch==2.13.0+cpu",
                   "pyyaml", "numpy"],
}


def venv_python(name: str) -> Path:
    return PEERS / name / "bin" / "python"


def setup(names: list[str]) -> None:
    """Create (or complete) the venv of each named peer; raise on an unknown name."""
    unknown = [n for n in names if n not in PEER_PACKAGES]
    if unknown:
        raise SystemExit(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEER_PACKAGES)}")
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for name in names:
        venv = PEERS / name
        if not venv_python(name).exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        packages = PEER_PACKAGES[name]
        ready = venv / "READY"
        if ready.exists() and ready.read_text(encoding="utf-8").split() == packages:
            print(f"{name}: already set up ({' '.join(packages)})", flush=True)
            continue
        print(f"installing {name}: {' '.join(packages)}", flush=True)
        done = subprocess.run(["nice", "-n", "10", str(venv_python(name)), "-m", "pip", "install",
                               "--quiet", *packages], env=env, check=False)
        if done.returncode:
            # a half-made venv would be measured as if complete: remove the marker instead
            print(f"{name}: pip install failed (exit {done.returncode}); its venv is incomplete",
                  flush=True)
            ready.unlink(missing_ok=True)
            continue
        ready.write_text(" ".join(packages) + "\n", encoding="utf-8")
        print(f"{name}: ready", flush=True)
