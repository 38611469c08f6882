"""Hostile text in a version (description, model card, tags, comments, query strings) shows
as text in the report and in the console: no element, no script link comes through."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from lockgate.api.facade import Lockgate
from lockgate.web import create_ui_app
from lockgate.web.report import render_report
from registry_server import make_home

# the description is the model card's first paragraph: raw HTML and links inside the card
HOSTILE = ('<script>alert(1)</script> <img src=x onerror=alert(2)> '
           '[click](javascript:alert(3)) [docs](https://example.org/docs)')


@pytest.fixture
def lg(tmp_path: Path) -> Lockgate:
    home, _, onnx = make_home(tmp_path)
    lg = Lockgate.open(home)
    lg.register(str(onnx), name="m", creator="dev", description=HOSTILE,
                tags={"team": '"><b>x</b>'})
    lg.approve("m@1", "stabilized", comment="<i>fine</i>", actor="appr")
    return lg


def _card(page: str) -> str:
    m = re.search(r'<div class="card-md">(.*?)</div>', page, re.S)
    assert m is not None
    return m.group(1)


def _no_markup_from_users(page: str) -> None:
    for element in ("<script", "<img", "<b>", "<i>"):
        assert element not in page
    assert "javascript:" not in "".join(re.findall(r'href="([^"]*)"', page))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the description, as text
    card = _card(page)
    assert "&lt;img src=x onerror=alert(2)&gt;" in card  # raw HTML in the card is text
    assert "[click](javascript:alert(3))" in card  # the javascript: link is refused
    assert '<a href="https://example.org/docs">docs</a>' in card  # other links render


def test_the_report_shows_hostile_text_as_text(lg: Lockgate) -> None:
    page = render_report(lg, "m@1")
    _no_markup_from_users(page)
    assert "&lt;i&gt;fine&lt;/i&gt;" in page  # the approval's comment


def test_the_console_shows_hostile_text_as_text(lg: Lockgate) -> None:
    c = TestClient(create_ui_app(lg, auth=False), base_url="http://127.0.0.1")
    page = c.get("/ui/models/m/versions/1").text
    _no_markup_from_users(page)
    assert "team=&#34;&gt;&lt;b&gt;x&lt;/b&gt;" in page  # a tag, in the lineage section
    audit = c.get("/ui/audit", params={"actor": '"><script>alert(4)</script>'}).text
    assert "<script" not in audit
    assert 'value="&#34;&gt;&lt;script&gt;alert(4)&lt;/script&gt;"' in audit
