"""The HTML model report: its content, and how it renders in a real headless Chromium (no
console errors, no request leaving the page, a screenshot taken)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from binaries import launch_chromium, needs
from lockgate.api.facade import Lockgate
from lockgate.cli.main import main
from monitor_windows import store_window
from onnx_models import linear_onnx

POLICY = '[gates]\n"*" = ["seeds_recorded"]\n'


def _version_with_a_monitor_run(home: Path, tmp_path: Path) -> None:
    """m@1 in production with a reference profile and one (drifted) monitor result, judged
    from captured rows shaped as the server's capture endpoint returns them."""
    (home / "lockgate.toml").write_text(POLICY)
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    rng = np.random.default_rng(5)
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "m.onnx"), name="m", seed=3, description="<b>demo</b>",
                    reference={"input": rng.normal(size=(2000, 4)).astype(np.float32)})
        lg.promote("m@1", "production")
        x = rng.normal(1.0, 1.0, size=(300, 4)).astype(np.float32)
        store_window(lg, "m@1", x, "2026-11-26T00:00:00Z")


def test_report_has_every_section_and_escapes_user_text(home: Path, tmp_path: Path) -> None:
    _version_with_a_monitor_run(home, tmp_path)
    out = tmp_path / "report.html"
    main(["--home", str(home), "report", "m@1", "--html", str(out)])
    page = out.read_text()
    for heading in ("Model card", "Lineage and environment", "Parity with the source framework",
                    "Gate results", "Serving latency", "Drift against the reference",
                    "Audit trail"):
        assert f">{heading}</h2>" in page
    assert "&lt;b&gt;demo&lt;/b&gt;" in page  # the description is text, not markup
    assert "<b>demo</b>" not in page
    assert page.count("<svg") >= 8  # a histogram per feature
    assert "input[0]" in page
    assert "seeds_recorded" in page  # the promotion's gate results
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page


def test_report_refuses_a_bad_path_and_an_unknown_version(home: Path, tmp_path: Path) -> None:
    (home / "lockgate.toml").write_text(POLICY)
    onnx.save(linear_onnx(), tmp_path / "m.onnx")
    with Lockgate.open(home) as lg:
        lg.register(str(tmp_path / "m.onnx"), name="m", seed=1)
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "report", "m@1", "--html", str(tmp_path / "r.pdf")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "report", "m@7", "--html", str(tmp_path / "r.html")])
    assert exc.value.code == 3
    assert not (tmp_path / "r.html").exists()


@needs("chromium")
@pytest.mark.slow
def test_report_renders_in_headless_chromium(home: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    _version_with_a_monitor_run(home, tmp_path)
    out = tmp_path / "report.html"
    with Lockgate.open(home) as lg:
        from lockgate.web.report import write_report

        write_report(lg, "m@1", out)
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser: Any = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.wait_for_load_state("load")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            title = page.title()
            svgs = page.locator("svg").count()
            drift_box = page.locator("#drift").bounding_box()
            heading_color = page.eval_on_selector(
                "header", "e => getComputedStyle(e).backgroundColor")
        finally:
            browser.close()
    assert errors == []
    assert requests == [out.as_uri()]  # the page itself, nothing else
    assert title == "m@1 — lockgate report"
    assert svgs >= 8
    assert drift_box is not None
    assert drift_box["height"] > 300  # the histograms take room: the layout rendered
    assert heading_color == "rgb(16, 42, 67)"  # the inline stylesheet applied
    assert shot.stat().st_size > 20_000
