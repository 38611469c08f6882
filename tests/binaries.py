"""Marks for tests that need a program on PATH."""

from __future__ import annotations

import os
import shutil

import pytest


def needs(program: str) -> pytest.MarkDecorator:
    """Skip, saying why, when ``program`` is not on PATH — except under
    ``LOCKGATE_REQUIRE_SERVICES=1`` (CI), where the test runs and a missing program fails it."""
    missing = shutil.which(program) is None
    required = os.environ.get("LOCKGATE_REQUIRE_SERVICES") == "1"
    return pytest.mark.skipif(missing and not required,
                              reason=f"{program} is not on PATH (LOCKGATE_REQUIRE_SERVICES=1 "
                                     "makes this a failure)")


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def launch_chromium(playwright: object) -> object:
    """Debian's /usr/bin/chromium under Playwright (never a downloaded browser), with the
    background services that would phone home turned off."""
    return playwright.chromium.launch(  # type: ignore[attr-defined]
        executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
