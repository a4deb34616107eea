"""Open a review page in headless Chromium, as a person would from the file system: a screenshot, or the DOM
once its scripts have run. Used by the browser test and by ``scripts/review_timing.py``; nothing else needs it.

Debian's ``chromium`` (``apt-get install chromium``) is enough; no flag loosens ``file://`` rules, so a page
that works here works when double-clicked. WebGL runs on the CPU (SwiftShader) without a GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# no first-run, sync, update or background traffic: without these a machine with no network waits on refusals
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
)  # fmt: skip


def find_browser() -> str | None:
    """Path of a Chromium-family browser: ``$MEDSEG_BROWSER``, else the first of :data:`NAMES` on PATH."""
    named = os.environ.get("MEDSEG_BROWSER")
    return named if named else next((found for name in NAMES if (found := shutil.which(name))), None)


def _run(url: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(f"no browser found (looked for $MEDSEG_BROWSER, {', '.join(NAMES)})")
    with tempfile.TemporaryDirectory(prefix="medseg-chromium-") as profile:
        command = [browser, *FLAGS, f"--user-data-dir={profile}", *args, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def page_url(page: str | Path, fragment: str = "") -> str:
    """``file://`` URL of a page, with ``#fragment`` (the review page reads ``case=..&opacity=..`` there)."""
    return Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")


def screenshot(
    url: str, out: str | Path, size: tuple[int, int] = (1400, 900), budget_ms: int = 10000, timeout: float = 120
) -> Path:
    """PNG of ``url`` after ``budget_ms`` of virtual time (scripts, case loading and WebGL drawing done)."""
    out = Path(out)
    args = [f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}", f"--screenshot={out}"]
    done = _run(url, args, timeout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {url} (exit {done.returncode}): {done.stderr[-2000:]}")
    return out


def dump_dom(url: str, size: tuple[int, int] = (1400, 900), budget_ms: int = 10000, timeout: float = 120) -> str:
    """The page's DOM after ``budget_ms`` of virtual time."""
    args = [f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}", "--dump-dom"]
    return _run(url, args, timeout).stdout
