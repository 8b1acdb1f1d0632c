"""A headless Chromium (Debian's package) driven over the DevTools protocol, for the web view's
test. The protocol runs over a pipe (--remote-debugging-pipe: fd 3 in, fd 4 out, messages
ending in NUL), so the browser can live in a network namespace with no port to reach it by."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ANSWER_TIMEOUT = 60.0  # seconds: a busy 2-core machine starts Chromium slowly


class BrowserError(Exception):
    pass


class Browser:
    """One page in a headless Chromium started with `launcher` (e.g. `ip netns exec NS`)."""

    def __init__(self, launcher: list[str], width: int = 1280, height: int = 900) -> None:
        if CHROMIUM is None:
            raise BrowserError("chromium is not installed")
        self.profile = tempfile.mkdtemp(prefix="pyloxi-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # bash puts the pipes at the fd numbers Chromium expects
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        self.proc = subprocess.Popen(
            [*launcher, "bash", "-c", script, CHROMIUM, "--headless=new", "--no-sandbox",
             "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--mute-audio",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._next_id = 0
        self.session = ""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        self.call("Page.enable")

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._from_browser], [], [], ANSWER_TIMEOUT)
            if not ready:
                raise BrowserError(f"chromium said nothing for {ANSWER_TIMEOUT} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(f"chromium went away (exit {self.proc.poll()})")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command (to the page once attached) and wait for its answer; events
        arriving meanwhile are dropped (nothing here waits for one)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read_message()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in out:
            raise BrowserError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(BrowserError, OSError):
                    self.call("Browser.close")
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, 9)
                    self.proc.wait(timeout=10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                with contextlib.suppress(OSError):
                    os.close(fd)
            shutil.rmtree(self.profile, ignore_errors=True)
