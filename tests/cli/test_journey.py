"""The README's promises, executed: the Python snippet, `--from`, and the demo."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from lockgate.cli.demo import run_demo
from lockgate.cli.main import main
from lockgate.progress import Progress
from lockgate.types import Version

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.torch
def test_readme_snippet_registers_a_torch_model_in_under_ten_lines(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    (block,) = _python_blocks()
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert len(lines) < 10
    exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("1 ")
    assert "output" in printed
    assert (home / "lockgate.db").exists()


FACTORY = '''
import numpy as np
import torch


def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    return model, np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
'''


@pytest.mark.torch
def test_register_from_a_factory_function(home: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    (tmp_path / "my_factory.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    main(["register", "--from", "my_factory:build", "--name", "cnn", "--seed", "0",
          "--metric", "acc=0.7"])
    out = capsys.readouterr().out
    assert "registered cnn@1" in out
    assert "pass" in out
    main(["promote", "cnn@1", "--to", "production"])
    assert "prototype → production" in capsys.readouterr().out


class RecordingView:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.versions: list[Version] = []

    def step(self, title: str) -> None:
        self.lines.append(title)

    def say(self, text: str) -> None:
        self.lines.append(text)

    def version(self, v: Version) -> None:
        self.versions.append(v)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.lines.append(title)

    @contextmanager
    def progress(self) -> Iterator[Progress | None]:
        yield None


@pytest.mark.torch
@pytest.mark.sklearn
@pytest.mark.slow
def test_demo_runs_the_whole_journey() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("skl2onnx")
    view = RecordingView()
    home = run_demo(view)
    assert not home.exists()
    import importlib.util

    extra = [f for f, mod in (("keras", "tf2onnx"), ("jax", "jax2onnx"))
             if importlib.util.find_spec(mod)]
    assert [v.framework for v in view.versions] == ["pytorch", "scikit-learn", *extra]
    assert all(v.parity is not None and v.parity.passed for v in view.versions)
    assert "served predictions match both source frameworks" in view.lines
    assert any(line.startswith("audit chain intact") for line in view.lines)
    assert any(line.startswith("monitor, traffic like the training data: ok")
               for line in view.lines)
    assert any(line.startswith("retraining trigger ") for line in view.lines)
    assert any(line.startswith("ci-bot uploaded demo-uploaded@1 over HTTP")
               for line in view.lines)
    assert any(line.startswith("ci-bot may not approve") for line in view.lines)
