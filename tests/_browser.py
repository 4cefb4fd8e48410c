"""Headless Chromium driven over the DevTools protocol (aiohttp, which Ray's dashboard already installs), to look
at a web UI as a user does: open a URL, click by visible text, read the page. No Playwright download needed."""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any, Callable, Iterator

import pytest

from tests._helpers import free_port


def chromium() -> str:
    """The Chromium binary, or skip the test: CI images without a browser cannot run it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine (apt install chromium) to look at the UI as a user does")


class Page:
    """One browser tab: ``js(expr)`` evaluates in the page; ``wait_for(expr)`` polls until it is truthy."""

    def __init__(self, ws: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._ws, self._loop, self._n = ws, loop, 0

    async def _cmd(self, method: str, **params: Any) -> dict:
        self._n += 1
        await self._ws.send_json({"id": self._n, "method": method, "params": params})
        while True:
            msg = await self._ws.receive_json()
            if msg.get("id") == self._n:
                return msg.get("result", {})

    def js(self, expression: str) -> Any:
        result = self._loop.run_until_complete(self._cmd("Runtime.evaluate", expression=expression, returnByValue=True))
        return result.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.js(f"location.href = {json.dumps(url)}")

    def wait_for(self, expression: str, timeout: float = 180.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        pytest.fail(f"{what or expression} did not happen in {timeout:.0f} s; at {self.js('location.href')}: "
                    f"{(self.js('document.body && document.body.innerText') or '')[:1500]}")

    def click_text(self, text: str, selector: str = "a,button,[role=radio],[role=tab],label,span,div") -> str:
        """Click the innermost element whose whole visible text is ``text``, as a user would."""
        return self.js(f"""(() => {{
            const els = [...document.querySelectorAll({json.dumps(selector)})]
                .filter(e => e.textContent.trim() === {json.dumps(text)} && e.offsetParent !== null);
            if (!els.length) return "";
            const el = els[els.length - 1]; el.click(); return el.tagName; }})()""")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 900) -> Iterator[Page]:
    """A fresh headless Chromium (its own profile: empty localStorage, as a first visit) and one tab in it."""
    import aiohttp

    binary = chromium()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                 f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loop = asyncio.new_event_loop()
        try:
            target = _new_target(port, proc)
            session = loop.run_until_complete(_open(aiohttp))
            ws = loop.run_until_complete(session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0))
            page = Page(ws, loop)
            loop.run_until_complete(page._cmd("Emulation.setDeviceMetricsOverride", width=width, height=height,
                                              deviceScaleFactor=1, mobile=False))
            try:
                yield page
            finally:
                loop.run_until_complete(ws.close())
                loop.run_until_complete(session.close())
        finally:
            loop.close()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _open(aiohttp: Any) -> Any:
    return aiohttp.ClientSession()


def _new_target(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
            return json.load(urllib.request.urlopen(req, timeout=5))
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not open its debugging port (exit {proc.poll()})")
            time.sleep(0.3)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen in {timeout:.0f} s")
        time.sleep(0.3)
