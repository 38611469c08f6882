"""The Jinja2 environment the console and the report render with.

Templates live in ``templates/`` beside this module (package data: they ship in the wheel).
Autoescaping is on for every template, so any value a template prints is text unless it is
:class:`markupsafe.Markup` built here (the model card's HTML, from
:mod:`lockgate.web.markdown`). One environment is made on first use and kept: templates are
compiled once per process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from lockgate.web.charts import CUR_COLOR, REF_COLOR
from lockgate.web.markdown import card_html
from lockgate.web.paths import audit_path, deployment_path, model_path, version_path

__all__ = ["TEMPLATES", "environment", "render"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
"""The folder the templates are read from."""

_OMITTED = ("signature_bundle", "files", "before", "after", "rule")


def pill_class(status: Any) -> str:
    """The stylesheet class of a status pill: ``pass``, ``fail``, ``drift``… (else ``review``)."""
    return re.sub(r"[^a-z_]", "", str(status).lower().split("+")[0]) or "review"


def num(value: Any, spec: str = ".4g") -> Any:
    """A number formatted with ``spec``; anything else as it is (printed as text)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return value


def fmt(value: Any, spec: str) -> str:
    """``format(value, spec)``, as an f-string field would write it."""
    return format(value, spec)


def payload_json(payload: Mapping[str, Any], limit: int) -> str:
    """An audit event's payload as JSON, cut to ``limit`` characters."""
    return json.dumps(dict(payload), default=str)[:limit]


def payload_short(payload: Mapping[str, Any], limit: int = 220) -> str:
    """An audit event's payload as sorted JSON without its bulky fields, ending in ``…`` when
    cut to ``limit`` characters."""
    keep = {k: x for k, x in payload.items() if k not in _OMITTED}
    text = json.dumps(keep, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@cache
def environment() -> Environment:
    """The one environment: autoescape on, undefined names an error, block tags leaving no
    blank lines behind."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      auto_reload=False)
    env.filters.update(pill_class=pill_class, num=num, fmt=fmt, payload_json=payload_json,
                       payload_short=payload_short, markdown=card_html)
    env.globals.update(REF_COLOR=REF_COLOR, CUR_COLOR=CUR_COLOR, audit_path=audit_path,
                       deployment_path=deployment_path, model_path=model_path,
                       version_path=version_path)
    return env


def render(template: str, /, **context: Any) -> str:
    """``template`` rendered with ``context``."""
    return environment().get_template(template).render(**context)
