"""The web console's pages and actions in-process: roles decide what is shown and done, forms
need their token, user text is escaped, live figures come from Prometheus text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from lockgate.api.facade import Lockgate
from lockgate.cli.main import main
from lockgate.web import create_ui_app
from lockgate.web.live import LiveMetrics, figures
from registry_server import make_home


@pytest.fixture
def console(tmp_path: Path) -> tuple[Lockgate, dict[str, str]]:
    home, tokens, onnx = make_home(tmp_path)
    lg = Lockgate.open(home)
    lg.register(str(onnx), name="m", creator="dev", description="<script>alert(1)</script>")
    lg.register(str(onnx), name="m", creator="dev")
    lg.promote("m@1", "stabilized", actor="ops")
    lg.promote("m@1", "production", actor="ops")
    lg.promote("m@2", "stabilized", actor="ops")
    lg.register(str(onnx), name="m", creator="dev")  # m@3 stays in prototype
    return lg, tokens


def _client(lg: Lockgate, token: str | None, **kw: object) -> TestClient:
    c = TestClient(create_ui_app(lg, **kw), follow_redirects=False)  # type: ignore[arg-type]
    if token is not None:
        r = c.post("/ui/login", data={"token": token})
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/"
        assert "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
    return c


def _csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert m is not None
    return m.group(1)


def test_pages_need_a_login_and_a_valid_token(console: tuple[Lockgate, dict[str, str]]) -> None:
    lg, tokens = console
    c = _client(lg, None)
    r = c.get("/ui/models/m")
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login"
    r = c.post("/ui/login", data={"token": "lgt_bogus"})
    assert r.status_code == 401
    assert "malformed" in r.text
    assert "lgt_bogus" not in r.text
    c = _client(lg, tokens["nobody"])
    assert c.get("/ui/").status_code == 403


def test_every_page_renders_with_security_headers(
        console: tuple[Lockgate, dict[str, str]]) -> None:
    lg, tokens = console
    c = _client(lg, tokens["view"])
    for path in ("/ui/", "/ui/models/m", "/ui/models/m/versions/1", "/ui/models/m/versions/1/drift",
                 "/ui/deployments", "/ui/deployments/m", "/ui/audit?model=m&type=alias.set"):
        r = c.get(path)
        assert r.status_code == 200, path
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "<script" not in r.text  # no script at all, and user text escaped
        assert "http://" not in r.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    page = c.get("/ui/models/m/versions/1").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert c.get("/ui/models/m/versions/1/files/bom.cdx.json").json()["bomFormat"] == "CycloneDX"
    assert c.get("/ui/models/nope").status_code == 404
    assert c.get("/ui/models/m/versions/99999999999").status_code == 404
    assert c.get("/ui/deployments/nope").status_code == 404


def test_buttons_follow_roles_and_actions_are_refused_anyway(
        console: tuple[Lockgate, dict[str, str]]) -> None:
    lg, tokens = console
    viewer = _client(lg, tokens["view"])
    page = viewer.get("/ui/models/m/versions/2").text
    assert "Approve or reject…" not in page
    assert "Promote…" not in page
    assert "Start canary…" not in viewer.get("/ui/deployments/m").text
    before = len(lg.audit_log())
    r = viewer.post("/ui/actions/canary", data={"model": "m", "version": "2", "weight": "20",
                                                "csrf": _csrf(page), "confirm": "yes"})
    assert r.status_code == 403
    assert [e.type for e in lg.audit_log()[before:]] == ["access.denied"]
    dev = _client(lg, tokens["dev"])
    assert "Promote…" not in dev.get("/ui/models/m/versions/2").text  # next: production
    page = dev.get("/ui/models/m/versions/3").text
    assert "Promote…" in page  # a developer promotes, but not into production
    choices = page.split('id="pr-to"')[1].split("</select>")[0]
    assert '<option value="stabilized">' in choices
    assert '<option value="production">' not in choices
    depl = _client(lg, tokens["depl"])
    assert "Start canary…" in depl.get("/ui/deployments/m").text


def test_actions_confirm_then_run_and_need_the_form_token(
        console: tuple[Lockgate, dict[str, str]]) -> None:
    lg, tokens = console
    c = _client(lg, tokens["depl"])
    csrf = _csrf(c.get("/ui/deployments/m").text)
    form = {"model": "m", "version": "2", "weight": "20", "csrf": csrf}
    r = c.post("/ui/actions/canary", data=form)
    assert r.status_code == 200
    assert "Confirm" in r.text
    assert lg.deployments()["m"].candidate is None  # nothing yet
    r = c.post("/ui/actions/canary", data={**form, "csrf": "0" * 32, "confirm": "yes"})
    assert r.status_code == 400
    assert lg.deployments()["m"].candidate is None
    r = c.post("/ui/actions/canary", data={**form, "confirm": "yes"})
    assert r.status_code == 200
    assert "deployment.changed" in r.text
    assert lg.deployments()["m"].candidate == 2
    assert lg.audit_log()[-1].actor == "depl"
    r = c.post("/ui/actions/weight", data={"model": "m", "weight": "500", "csrf": csrf,
                                          "confirm": "yes"})
    assert r.status_code == 400  # validated as over the API
    r = c.post("/ui/actions/nonsense", data={"model": "m", "csrf": csrf, "confirm": "yes"})
    assert r.status_code == 404


def test_single_user_mode_needs_no_login(console: tuple[Lockgate, dict[str, str]]) -> None:
    lg, _ = console
    c = TestClient(create_ui_app(lg, auth=False), base_url="http://127.0.0.1:8090",
                   follow_redirects=False)
    r = c.get("/ui/models/m/versions/2")
    assert r.status_code == 200
    # only loopback names: another name resolving here is refused
    assert c.get("/ui/models/m/versions/2", headers={"Host": "testserver"}).status_code == 421
    assert "Approve or reject…" in r.text  # the home's user holds every role
    assert c.get("/ui/login").status_code == 303


def test_auth_rules_of_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOCKGATE_HOME", str(tmp_path / "h"))
    for args in (["ui", "--host", "0.0.0.0", "--no-auth"],
                 ["server", "--host", "0.0.0.0"],   # no users: nobody could log in
                 ["ui", "--serving-url", "ftp://x"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "bind it to 127.0.0.1" in err
    assert "needs tokens" in err


def test_live_figures_from_prometheus_text() -> None:
    text = """# TYPE lockgate_requests_total counter
lockgate_requests_total{model="m",version="1"} 100
lockgate_requests_total{model="other",version="1"} 7
# TYPE lockgate_request_failures_total counter
lockgate_request_failures_total{model="m",version="1",reason="bad_request"} 4
lockgate_request_failures_total{model="m",version="1",reason="internal"} 2
# TYPE lockgate_request_duration_seconds histogram
lockgate_request_duration_seconds_bucket{model="m",version="1",le="0.001"} 50
lockgate_request_duration_seconds_bucket{model="m",version="1",le="0.01"} 99
lockgate_request_duration_seconds_bucket{model="m",version="1",le="+Inf"} 100
lockgate_request_duration_seconds_count{model="m",version="1"} 100
lockgate_request_duration_seconds_sum{model="m",version="1"} 0.3
"""
    f = figures(text, "m")["1"]
    assert f["requests"] == 100
    assert f["error_rate"] == pytest.approx(0.02)  # the version's own failures only
    assert f["client_error_rate"] == pytest.approx(0.04)
    assert f["p50"] == pytest.approx(0.001)
    assert f["p99"] == pytest.approx(0.01)
    assert figures(text, "absent") == {}
    assert LiveMetrics(lambda: (_ for _ in ()).throw(OSError("down"))).model("m") is None


def test_audit_trail_names_the_first_broken_row(
        console: tuple[Lockgate, dict[str, str]]) -> None:
    import sqlalchemy as sa

    lg, tokens = console
    c = _client(lg, tokens["view"])
    assert "intact over" in c.get("/ui/audit").text
    engine = sa.create_engine(lg.settings.database_url)
    with engine.begin() as conn:  # an edit behind lockgate's back
        conn.execute(sa.text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 12"))
    engine.dispose()
    page = c.get("/ui/audit").text
    assert "broken at row 12" in page
    assert '<tr class="broken">' in page
