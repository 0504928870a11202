"""Headless Chromium for the browser tests: Playwright driving Debian's ``chromium``.

No browser download: Playwright launches ``/usr/bin/chromium`` (installed by
``make system-deps``) through ``executable_path``. Where chromium or
Playwright is missing, the tests skip with that hint, except under CI (the
``CI`` environment variable set), where they fail instead.

Playwright's sync API runs an event loop in the test's thread, so Django's
"async-unsafe" guard would refuse ORM calls made by the tests themselves; the
tests run their ORM calls in that thread deliberately (the live server has its
own thread), so ``DJANGO_ALLOW_ASYNC_UNSAFE`` is set while the browser (and
so the loop) is up, and removed with it.

Screenshots go to ``test-artifacts/`` at the repository root (gitignored), or
to ``$APIAUTH_TEST_ARTIFACTS``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def find_chromium() -> str | None:
    for candidate in ("chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


CHROMIUM = find_chromium()


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set, so the browser tests must run)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    directory = Path(os.environ.get("APIAUTH_TEST_ARTIFACTS") or REPO / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser(live_server: Any) -> Iterator[Any]:
    """One Chromium per test module.

    Started after the live server (and so after the test database): the
    event loop of Playwright's sync API runs in this thread while the browser
    is up. Module-scoped, so the loop is gone again before any other test
    module runs its ORM calls.
    """
    if CHROMIUM is None:
        _missing("chromium is not installed: run `make system-deps` (scripts/system-deps.sh installs "
                 "Debian's chromium) to run the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: `pip install -e .[dev]`")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # while Playwright's loop runs here
    playwright = sync_playwright().start()
    try:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS,
                                                 headless=True)
        except Exception as exc:
            _missing(f"chromium could not be started by Playwright: {exc}")
        yield browser
        browser.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url, accept_downloads=True,
                                  viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()
