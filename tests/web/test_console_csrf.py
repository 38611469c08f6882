"""Forged console requests: against real `lockgate ui` and `lockgate serve --ui` processes in
the zero-config no-login mode, and in-process with logins, a POST another site sends is a 403
that changes nothing and is audited; form tokens are keyed by the home's secret (0600) and bound
to one session; a same-origin POST with the right token still works. Without login, a request
for a Host that is not a loopback name (DNS rebinding) is a 421 that yields no session, no form
token and no change. Refusals with ever-new Origins fold into one audit row carrying the count,
written at the lifespan shutdown that SIGTERM runs."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from lockgate.api.facade import Lockgate
from lockgate.web import attach_console, create_ui_app
from lockgate.web.session import SECRET_FILE, console_secret
from onnx_models import linear_onnx
from registry_server import SIGNATURE_ONLY, make_home
from servers import lockgate_server

USER = "ops"
EVIL = "http://evil.example"


def _csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert m is not None
    return m.group(1)


def _solo_home(root: Path) -> Path:
    """A zero-config home (no users): m@1 in production, m@2 in prototype."""
    home = root / "home"
    home.mkdir()
    (home / "lockgate.toml").write_text(SIGNATURE_ONLY, encoding="utf-8")
    onnx = root / "model.onnx"
    onnx.write_bytes(linear_onnx().SerializeToString())
    with Lockgate.open(home, user=USER) as lg:
        lg.register(str(onnx), name="m", creator="dev")
        lg.register(str(onnx), name="m", creator="dev")
        lg.promote("m@1", "stabilized", actor=USER)
        lg.promote("m@1", "production", actor=USER)
    return home


@contextmanager
def _console(home: Path, stop: signal.Signals = signal.SIGINT) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env.update(ORT_DISABLE_TELEMETRY="1", LOCKGATE_USER=USER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate", "--home", str(home), "ui", "--port", "0"],
        stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    try:
        while True:
            line = proc.stderr.readline()
            assert line, "the console exited"
            if m := re.search(r"console on (http://127\.0\.0\.1:\d+)/ui/ \(no login", line):
                break
        threading.Thread(target=lambda: [None for _ in proc.stderr],  # type: ignore[union-attr]
                         daemon=True).start()
        yield m.group(1)
    finally:
        proc.send_signal(stop)
        proc.wait(timeout=60)
        proc.stderr.close()


def _stage(home: Path, ref: str) -> str:
    with Lockgate.open(home, user=USER) as lg:
        return lg.get(ref).stage


def _refusals(home: Path) -> list[tuple[str, str, str]]:
    with Lockgate.open(home, user=USER) as lg:
        return [(r.actor, str(r.payload.get("reason", "")), str(r.payload.get("detail", "")))
                for r in lg.audit_log() if r.type == "access.denied"]


def _promote(csrf: str) -> dict[str, str]:
    return {"model": "m", "version": "2", "to": "stabilized", "csrf": csrf, "confirm": "yes"}


def test_no_login_console_refuses_forged_posts(tmp_path: Path) -> None:
    home = _solo_home(tmp_path)
    with _console(home) as url, httpx.Client(base_url=url) as browser, \
            httpx.Client(base_url=url) as other:
        r = browser.get("/ui/models/m/versions/2")
        assert r.status_code == 200
        cookie = r.headers["set-cookie"].lower()
        assert "lockgate_console=" in cookie
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        csrf = _csrf(r.text)
        secret = home / SECRET_FILE
        assert secret.is_file()
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(secret.read_bytes()) == 32

        # another site's page posts a valid form: refused by Origin, then by Sec-Fetch-Site
        for headers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site"},
                        {"Origin": "null", "Sec-Fetch-Site": "cross-site"}):
            r = browser.post("/ui/actions/promote", data=_promote(csrf), headers=headers)
            assert r.status_code == 403, headers
            assert "Refused" in r.text
        r = browser.post("/ui/login", data={"token": "x"}, headers={"Origin": EVIL})
        assert r.status_code == 403
        assert _stage(home, "m@2") == "prototype"
        refusals = _refusals(home)
        assert (USER, "console refused a cross-site request: state changes come from the "
                "console's own pages", "refused a request from origin 'http://evil.example'"
                ) in refusals
        assert len(refusals) == 2  # promote and login: the repeats are folded

        # the token the console used to derive from a constant and the user's name
        old = hmac.new(b"lockgate-ui-form", f"local:{USER}".encode(),
                       hashlib.sha256).hexdigest()[:32]
        assert browser.post("/ui/actions/promote", data=_promote(old)).status_code == 400
        # one browser's token with another browser's session cookie, or with none
        assert other.get("/ui/models/m/versions/2").status_code == 200
        assert other.cookies["lockgate_console"] != browser.cookies["lockgate_console"]
        assert other.post("/ui/actions/promote", data=_promote(csrf)).status_code == 400
        r = httpx.post(f"{url}/ui/actions/promote", data=_promote(csrf))
        assert r.status_code == 400
        assert "stale or forged" in r.text
        assert _stage(home, "m@2") == "prototype"

        # the console's own page, as a browser sends it: the promotion happens
        r = browser.post("/ui/actions/promote", data=_promote(csrf),
                         headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 200, r.text
        assert "version.stage_changed" in r.text
        assert _stage(home, "m@2") == "stabilized"
        assert browser.get("/ui/models/m/versions/²").status_code == 404
    with Lockgate.open(home, user=USER) as lg:
        assert lg.audit_verify().ok


def test_serve_ui_refuses_cross_site_posts(tmp_path: Path) -> None:
    home = _solo_home(tmp_path)
    with lockgate_server(home, "--ui") as (host, port), \
            httpx.Client(base_url=f"http://{host}:{port}") as browser:
        r = browser.get("/ui/models/m/versions/2", headers={"Host": f"evil.example:{port}"})
        assert r.status_code == 421  # no login: loopback names only, beside the data plane too
        csrf = _csrf(browser.get("/ui/models/m/versions/2").text)
        r = browser.post("/ui/actions/promote", data=_promote(csrf), headers={"Origin": EVIL})
        assert r.status_code == 403
        assert _stage(home, "m@2") == "prototype"
        r = browser.post("/ui/actions/promote", data=_promote(csrf),
                         headers={"Origin": f"http://{host}:{port}"})
        assert r.status_code == 200, r.text
        assert _stage(home, "m@2") == "stabilized"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[Lockgate, dict[str, str]]]:
    home, tokens, onnx = make_home(tmp_path)
    with Lockgate.open(home) as lg:
        lg.register(str(onnx), name="m", creator="dev")
        lg.register(str(onnx), name="m", creator="dev")
        lg.promote("m@1", "stabilized", actor="ops")
        lg.promote("m@1", "production", actor="ops")
        yield lg, tokens


def _login(lg: Lockgate, token: str) -> TestClient:
    c = TestClient(create_ui_app(lg), follow_redirects=False)
    assert c.post("/ui/login", data={"token": token}).status_code == 303
    return c


def test_logged_in_tokens_are_bound_to_the_session(
        console: tuple[Lockgate, dict[str, str]]) -> None:
    lg, tokens = console
    dev, admin = _login(lg, tokens["dev"]), _login(lg, tokens["admin"])
    dev_csrf = _csrf(dev.get("/ui/models/m/versions/2").text)
    admin_csrf = _csrf(admin.get("/ui/models/m/versions/2").text)
    assert dev_csrf != admin_csrf
    form = _promote(dev_csrf)
    assert admin.post("/ui/actions/promote", data=form).status_code == 400
    assert lg.get("m@2").stage == "prototype"
    # a cross-site login is refused before any token is read, and audited
    anon = TestClient(create_ui_app(lg), follow_redirects=False)
    r = anon.post("/ui/login", data={"token": tokens["admin"]},
                  headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert "lockgate_session" not in r.headers.get("set-cookie", "")
    last = lg.audit_log()[-1]
    assert (last.type, last.actor, last.payload["action"]) == (
        "access.denied", "anonymous", "console.login")
    r = dev.post("/ui/actions/promote", data=form,
                  headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text
    assert lg.get("m@2").stage == "stabilized"


def test_the_secret_is_made_once_even_by_racing_processes(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: console_secret(tmp_path), range(16)))
    assert len(secrets) == 1
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["console.secret"]


def test_no_login_console_answers_only_to_loopback_hosts(tmp_path: Path) -> None:
    home = _solo_home(tmp_path)
    with Lockgate.open(home, user=USER) as lg:
        before = len(lg.audit_log())
    with _console(home) as url:
        port = int(url.rsplit(":", 1)[1])
        rebound = f"evil.example:{port}"  # a page of evil.example whose name now means us
        with httpx.Client(base_url=url, headers={"Host": rebound}) as page:
            for path in ("/", "/ui", "/ui/", "/ui/login", "/ui/models/m/versions/2",
                         "/ui/audit", "/ui/models/m/versions/1/files/bom.cdx.json"):
                r = page.get(path)
                assert r.status_code == 421, path
                assert "set-cookie" not in r.headers, path
                assert 'name="csrf"' not in r.text
            r = page.post("/ui/actions/promote", data=_promote("0" * 64),
                          headers={"Origin": f"http://{rebound}", "Sec-Fetch-Site": "same-origin"})
            assert r.status_code == 421
            assert "answers only to localhost, 127.0.0.1 and [::1]" in r.text
        for host in ("evil.example", f"127.0.0.1.evil.example:{port}",
                     f"localhost.evil.example:{port}", f"[::2]:{port}", ""):
            assert httpx.get(f"{url}/ui/", headers={"Host": host}).status_code == 421, host
        assert _stage(home, "m@2") == "prototype"
        with Lockgate.open(home, user=USER) as lg:
            assert len(lg.audit_log()) == before  # a misdirected request writes nothing

        for host in (f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}"):
            assert httpx.get(f"{url}/ui/", headers={"Host": host}).status_code == 200, host
        own = f"localhost:{port}"
        with httpx.Client(base_url=url, headers={"Host": own}) as browser:
            csrf = _csrf(browser.get("/ui/models/m/versions/2").text)
            r = browser.post("/ui/actions/promote", data=_promote(csrf),
                             headers={"Origin": f"http://{own}", "Sec-Fetch-Site": "same-origin"})
            assert r.status_code == 200, r.text
        assert _stage(home, "m@2") == "stabilized"


def _denials_since(home: Path, since: int) -> list[dict[str, object]]:
    with Lockgate.open(home, user=USER) as lg:
        assert lg.audit_verify().ok
        return [dict(r.payload) for r in lg.audit_log()[since:] if r.type == "access.denied"]


def test_cross_site_refusals_with_new_origins_fold_and_survive_sigterm(tmp_path: Path) -> None:
    home = _solo_home(tmp_path)
    with Lockgate.open(home, user=USER) as lg:
        before = len(lg.audit_log())
    with _console(home, stop=signal.SIGTERM) as url, httpx.Client(base_url=url) as c:
        for i in range(300):  # every one with an Origin never seen before
            action = "promote" if i % 2 == 0 else f"made-up-{i}"
            r = c.post(f"/ui/actions/{action}", data={"model": "m", "version": "2", "to": "x"},
                       headers={"Origin": f"http://a{i}.example"})
            assert r.status_code == 403
        running = _denials_since(home, before)
        assert [p["action"] for p in running] == ["console.promote", "console.unknown"]
        assert running[0]["detail"] == "refused a request from origin 'http://a0.example'"
    rows = _denials_since(home, before)  # SIGTERM: the lifespan shutdown wrote the runs
    assert len(rows) == 4
    folded = {str(p["action"]): p for p in rows if "count" in p}
    assert {a: p["count"] for a, p in folded.items()} == {"console.promote": 149,
                                                          "console.unknown": 149}
    assert folded["console.promote"]["last_detail"] == (
        "refused a request from origin 'http://a298.example'")
    assert _stage(home, "m@2") == "prototype"


def test_anonymous_refusals_fold_per_source_beside_the_data_plane(
        console: tuple[Lockgate, dict[str, str]]) -> None:
    lg, _ = console
    before = len(lg.audit_log())
    app = lg.create_app(["m@1"])
    attach_console(app, lg)  # as `lockgate serve --ui` does
    with TestClient(app, follow_redirects=False) as anon:
        for i in range(50):
            r = anon.post("/ui/login", data={"token": "x"}, headers={
                "Origin": f"http://a{i}.example", "Sec-Fetch-Site": "cross-site"})
            assert r.status_code == 403
        assert [(r.actor, r.payload.get("count")) for r in lg.audit_log()[before:]
                if r.type == "access.denied"] == [("anonymous", None)]
    # the data plane's lifespan shutdown wrote the run (before Lockgate.close)
    rows = [r for r in lg.audit_log()[before:] if r.type == "access.denied"]
    assert [(r.actor, r.payload["action"], r.payload["source"], r.payload.get("count"))
            for r in rows] == [("anonymous", "console.login", "testclient", None),
                               ("anonymous", "console.login", "testclient", 49)]
    assert rows[1].payload["last_detail"] == "refused a 'cross-site' request (Sec-Fetch-Site)"
