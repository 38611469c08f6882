"""The web console end to end in Debian's Chromium (Playwright, never a downloaded browser):
log in with tokens, approve as an approver, see no approve button as a viewer, start a canary
and roll back as a deployer, and find each action in the audit trail — against real `lockgate
ui` and `lockgate serve` processes on 127.0.0.1. No request leaves 127.0.0.1; screenshots go to
test-artifacts/ui/."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from binaries import launch_chromium, needs
from lockgate.api.facade import Lockgate
from monitor_windows import store_window
from registry_server import make_home
from servers import lockgate_server

pytestmark = [pytest.mark.slow, needs("chromium")]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"


def _prepare(home: Path, onnx: Path) -> None:
    """m@1 in production with a reference and a drifted monitor window; m@2 stabilized."""
    rng = np.random.default_rng(3)
    with Lockgate.open(home) as lg:
        lg.register(str(onnx), name="m", creator="dev", description="fraud scorer",
                    reference={"input": rng.normal(size=(2000, 4)).astype(np.float32)})
        lg.register(str(onnx), name="m", creator="dev")
        lg.promote("m@1", "stabilized", actor="ops")
        lg.promote("m@1", "production", actor="ops")
        lg.promote("m@2", "stabilized", actor="ops")
        for hour, shift in enumerate((0.0, 1.0)):
            x = rng.normal(shift, 1.0, size=(300, 4)).astype(np.float32)
            store_window(lg, "m@1", x, f"2026-11-26T0{hour}:00:00Z")


@contextmanager
def _console(home: Path, serving: str) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env["ORT_DISABLE_TELEMETRY"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "ui", "--port", "0",
         "--serving-url", serving], stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    try:
        while True:
            line = proc.stderr.readline()
            assert line, "the console exited"
            if m := re.search(r"console on (http://127\.0\.0\.1:\d+)/ui/", line):
                break
        reader = threading.Thread(target=lambda: [None for _ in proc.stderr],  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        yield m.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        proc.stderr.close()


def _infer(port: int, n: int) -> None:
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                   "data": [0.1, 0.2, 0.3, 0.4]}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        conn.request("POST", "/v2/models/m/infer", body=body,
                     headers={"content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
    conn.close()


def test_console_journey_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    home, tokens, onnx = make_home(tmp_path)
    _prepare(home, onnx)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    errors: list[str] = []
    with lockgate_server(home) as (_, serve_port), \
            _console(home, f"http://127.0.0.1:{serve_port}") as base, sync_playwright() as p:
        _infer(serve_port, 25)
        browser: Any = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def login(user: str) -> None:
                page.goto(base + "/ui/")
                expect(page).to_have_url(base + "/ui/login")
                page.keyboard.press("Tab")  # the skip link comes first, then the form
                page.get_by_label("API token").fill(tokens[user])
                page.get_by_label("API token").press("Enter")
                expect(page.get_by_role("heading", name="Models", level=1)).to_be_visible()

            def logout() -> None:
                page.get_by_role("button", name="Log out").click()
                expect(page).to_have_url(base + "/ui/login")

            def confirm_and_read() -> str:
                expect(page.get_by_role("heading", name="Confirm", level=1)).to_be_visible()
                page.get_by_role("button", name="Confirm").click()
                expect(page.get_by_role("heading", name="Done", level=1)).to_be_visible()
                return page.locator("#result").inner_text()

            # an approver approves m@2 for production
            login("appr")
            page.get_by_role("link", name="m", exact=True).click()
            page.get_by_role("link", name="2", exact=True).click()
            expect(page.locator("#signature")).to_contain_text("verified")
            expect(page.locator("#bom")).to_contain_text("Licenses")
            _unlabelled(page)
            page.screenshot(path=str(ARTIFACTS / "version-page.png"), full_page=True)
            page.screenshot(path=str(ARTIFACTS / "version-page-top.png"))
            page.get_by_label("For stage").select_option("production")
            page.get_by_label("Comment").fill("bias review done")
            page.get_by_role("button", name="Approve or reject…").click()
            done = confirm_and_read()
            assert "version.approved" in done
            assert "appr" in done
            logout()

            # a viewer sees no approve (or promote) button; the action is refused anyway
            login("view")
            page.goto(base + "/ui/models/m/versions/2")
            expect(page.locator("#decisions")).to_contain_text("bias review done")
            assert page.get_by_role("button", name="Approve or reject…").count() == 0
            assert page.get_by_role("button", name="Promote…").count() == 0
            expect(page.locator("#actions")).to_contain_text("allow no action")
            logout()

            # a deployer starts a canary, looks at the deployment, and rolls back
            login("depl")
            page.goto(base + "/ui/deployments/m")
            expect(page.locator("#slots")).to_contain_text("requests")
            page.get_by_label("Version").select_option("2")
            page.get_by_label("Weight (%)").fill("20")
            page.get_by_role("button", name="Start canary…").click()
            done = confirm_and_read()
            assert "deployment.changed" in done
            assert '"action": "canary"' in done
            page.goto(base + "/ui/deployments/m")
            expect(page.locator("#traffic")).to_contain_text("candidate 2: 20%")
            _infer(serve_port, 10)
            page.reload()
            page.screenshot(path=str(ARTIFACTS / "deployment-view.png"), full_page=True)
            page.get_by_label("Reason").fill("latency")
            page.get_by_role("button", name="Roll back…").click()
            done = confirm_and_read()
            assert '"action": "rollback"' in done
            page.goto(base + "/ui/deployments/m")
            expect(page.locator("#traffic")).not_to_contain_text("candidate")

            # drift over time and the audit trail
            page.goto(base + "/ui/models/m/versions/1/drift")
            assert page.locator("svg").count() >= 5
            page.screenshot(path=str(ARTIFACTS / "drift-view.png"), full_page=True)
            page.goto(base + "/ui/audit")
            page.get_by_label("Model").fill("m")
            page.get_by_label("Actor").fill("depl")
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("#chain")).to_contain_text("intact")
            events = page.locator("#events table").inner_text()
            page.screenshot(path=str(ARTIFACTS / "audit-trail.png"), full_page=True)
            page.get_by_label("Actor").fill("appr")
            page.get_by_role("button", name="Filter").click()
            approvals = page.locator("#events table").inner_text()
        finally:
            browser.close()
    assert events.count("deployment.changed") == 2
    assert "version.approved" in approvals
    assert errors == []
    hosts = {re.sub(r"^(https?://[^/]+).*$", r"\1", u) for u in requests}
    assert hosts == {base}, hosts  # nothing but the console itself
    assert (ARTIFACTS / "version-page.png").stat().st_size > 20_000


def _unlabelled(page: Any) -> None:
    """Every visible control has a label (keyboard and screen-reader users need one)."""
    missing = page.evaluate("""() => [...document.querySelectorAll(
        'input:not([type=hidden]), select, textarea')].filter(
        e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(
        e => e.name)""")
    assert missing == []
