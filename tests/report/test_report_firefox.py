"""Smoke test of the report in Firefox (Debian's ``firefox-esr``), when it is installed.

Firefox speaks WebDriver BiDi itself (``--remote-debugging-port``), so no geckodriver and no
browser download are needed: a few BiDi commands over a WebSocket (``websocket-client``) open
the index and a case page, and check that they load with no console error and no request
beyond ``file://``, that the case table is there, that the slice viewer unpacks its data
(``DecompressionStream``) and draws, and that the screenshot is not blank. Chromium stays
the browser the full tests drive (``test_report_browser.py``).
"""

from __future__ import annotations

import base64
import http.server
import io
import itertools
import json
import os
import re
import shutil
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

FIREFOX = os.environ.get("VOXSEG_FIREFOX") or shutil.which("firefox-esr") or shutil.which("firefox")


def _skip_reason() -> str:
    if FIREFOX is None:
        return "no Firefox installed (apt-get install firefox-esr)"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "websocket-client is not installed (pip install websocket-client)"
    return ""


pytestmark = pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "ok")


class BiDi:
    """A headless Firefox and a WebDriver BiDi session with it (the W3C protocol's
    ``session``, ``browsingContext``, ``script`` and ``log``/``network`` events)."""

    def __init__(self, profile: Path) -> None:
        import websocket

        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [FIREFOX, "--headless", "--no-remote", "--profile", str(profile)]
            + ["--remote-debugging-port", "0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1"},
        )
        url = None
        deadline = time.monotonic() + 90
        lines = []
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            lines.append(line)
            found = re.search(r"WebDriver BiDi listening on (ws://\S+)", line)
            url = found.group(1) if found else None
        if url is None:
            self.close()
            raise RuntimeError("Firefox did not start its BiDi server:\n" + "".join(lines))
        self.ws = websocket.create_connection(
            url.rstrip("/") + "/session", timeout=60, suppress_origin=True
        )
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        self.send("session.new", {"capabilities": {}})
        self.context = self.send("browsingContext.getTree", {})["contexts"][0]["context"]
        # every context (a subscription limited to the page's context gets no network events
        # in Firefox 153); requests() keeps the page's own
        self.send("session.subscribe", {"events": ["log.entryAdded", "network.beforeRequestSent"]})

    def send(self, method: str, params: dict) -> dict:
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("type") == "event":
                self.events.append(msg)
            elif msg.get("id") == n:
                if msg.get("type") == "error":
                    raise RuntimeError(f"{method}: {msg.get('error')}: {msg.get('message')}")
                return msg["result"]

    def open(self, path: Path) -> None:
        url = path.absolute().as_uri()
        self.send(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}
        )

    def evaluate(self, expression: str):
        result = self.send(
            "script.evaluate",
            {"expression": expression, "target": {"context": self.context}, "awaitPromise": True},
        )
        if result.get("type") == "exception":
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(expression)
            time.sleep(0.1)

    def screenshot(self) -> np.ndarray:
        data = self.send("browsingContext.captureScreenshot", {"context": self.context})["data"]
        return np.asarray(PILImage.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def errors(self) -> list[str]:
        return [
            e["params"].get("text", "")
            for e in self.events
            if e["method"] == "log.entryAdded" and e["params"].get("level") == "error"
        ]

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "network.beforeRequestSent"
            and e["params"].get("context") in (None, self.context)
        ]

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def test_report_opens_offline_in_firefox(eval_report, tmp_path):
    firefox = BiDi(tmp_path / "profile")
    try:
        firefox.open(eval_report / "index.html")
        assert firefox.evaluate("document.title").startswith("voxseg report")
        assert firefox.evaluate("document.querySelectorAll('table.cases tbody tr').length") == 3
        assert firefox.evaluate("document.querySelectorAll('svg.plot').length") >= 4
        assert firefox.screenshot().std() > 10
        firefox.open(eval_report / "cases" / "organs_test_000.html")
        firefox.wait_for("document.getElementById('viewer').dataset.ready === '1'")
        drawn = firefox.evaluate(
            "(() => { const c = document.getElementById('slice');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];"
            " return s; })()"
        )
        assert drawn > 0  # the canvas holds the slice
        assert firefox.screenshot().std() > 10
        assert firefox.errors() == []
        outside = [u for u in firefox.requests() if not u.startswith(("file://", "data:", "blob:"))]
        assert outside == []
        # the two channels do report: on a page without the report's Content-Security-Policy
        # (which blocks any request beyond the file), an error and a request made on purpose
        server = socketserver.TCPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        probe = f"http://127.0.0.1:{server.server_address[1]}/probe.png"
        plain = tmp_path / "plain.html"
        plain.write_text("<!doctype html><title>probe</title><body></body>")
        try:
            firefox.open(plain)
            firefox.evaluate(
                "console.error('probe'); const i = new Image();"
                f" i.src = '{probe}'; document.body.appendChild(i); 1"
            )
            firefox.wait_for("new Promise(r => setTimeout(() => r(true), 500))")
        finally:
            server.shutdown()
            server.server_close()
        assert "probe" in firefox.errors()
        assert probe in firefox.requests()
    finally:
        firefox.close()
