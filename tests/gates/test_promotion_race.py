"""What the README promises of racing promotions, proved with real `lockgate promote` processes
on one SQLite home: of promotions into an exclusive stage that saw the same current holder,
exactly one wins and the others exit 7 (PromotionError: the stage changed under them)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

from lockgate.api.facade import Lockgate
from lockgate.audit import EventType
from lockgate.store.artifacts import LocalArtifactStore
from onnx_models import linear_onnx

POLICY = '[gates]\n"*" = ["signature"]\n'
RACERS = 6


def _reader_is_waiting(fifo: Path) -> int | None:
    """A write end of ``fifo`` once a reader has it open, else None."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None
        raise


def test_racing_promotions_that_saw_the_same_holder_one_wins_the_rest_exit_7(
        home: Path) -> None:
    (home / "lockgate.toml").write_text(POLICY, encoding="utf-8")
    with Lockgate.open(home) as lg:
        versions = [lg.register(linear_onnx(seed=i), name="m") for i in range(RACERS + 1)]
        lg.promote("m@1", "production")  # the current holder every racer sees
        assert isinstance(lg.artifacts, LocalArtifactStore)
        blobs = {v.number: lg.artifacts.path_for(v.digest) for v in versions[1:]}
    # A barrier across processes: each racer's model blob is swapped for a FIFO, so its
    # signature gate (which runs after the promotion has read the stage's holder, before it
    # commits) blocks on the read until every racer has got that far.
    contents = {n: p.read_bytes() for n, p in blobs.items()}
    for p in blobs.values():
        p.unlink()
        os.mkfifo(p)
    procs = {n: subprocess.Popen(
        [sys.executable, "-m", "lockgate", "promote", f"m@{n}", "--to", "production"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in blobs}
    writers: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 240
        while len(writers) < len(blobs) and time.monotonic() < deadline:
            for n, p in blobs.items():
                if n not in writers and (fd := _reader_is_waiting(p)) is not None:
                    writers[n] = fd
            assert all(proc.poll() is None for proc in procs.values()), "a racer exited early"
            time.sleep(0.01)
        assert len(writers) == len(blobs), "every racer reached its gate"
        for n, p in blobs.items():  # the real file back in place, for later reads
            staged = p.with_name(p.name + ".restore")
            staged.write_bytes(contents[n])
            staged.chmod(0o444)
            os.replace(staged, p)
        for n, fd in writers.items():  # release every racer at once
            os.write(fd, contents[n])
            os.close(fd)
        writers.clear()
        outcomes = {n: (proc.wait(timeout=240), *proc.communicate()) for n, proc in procs.items()}
    finally:
        for fd in writers.values():
            os.close(fd)
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    winners = [n for n, (rc, _, _) in outcomes.items() if rc == 0]
    assert len(winners) == 1, outcomes
    losers = {n: o for n, o in outcomes.items() if n not in winners}
    assert {rc for rc, _, _ in losers.values()} == {7}, losers
    for _rc, _out, err in losers.values():
        assert "changed meanwhile" in err or "is now in stage" in err, err
        assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    with Lockgate.open(home) as lg:
        assert [v.number for v in lg.versions("m") if v.stage == "production"] == winners
        assert lg.get("m@1").stage == lg.settings.stages[-1]  # the holder was retired once
        moves = [r for r in lg.audit_log() if r.type == EventType.STAGE_CHANGED
                 and r.payload.get("to") == "production"]
        assert [r.version for r in moves] == [1, winners[0]]
        assert lg.audit_verify().ok
        for n in blobs:
            assert lg.verify(lg.get(f"m@{n}")) is not None  # every blob restored intact
