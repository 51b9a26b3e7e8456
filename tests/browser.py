"""A real headless Chromium driven over the DevTools protocol, for the report's browser test.

The browser is Debian's ``chromium`` (the system one: nothing is downloaded). It is driven
through ``--remote-debugging-pipe``: protocol messages go over two pipes (the browser reads
fd 3 and writes fd 4, each message JSON ending in a NUL byte), so no port is opened and no
client library is needed; the protocol's Page, Runtime and Log domains have been stable across
Chromium versions for years, where a driver library pins the browser build it was made for.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: How to get the browser where it is missing (Debian, as root); the test says it on failure.
INSTALL_HINT = "apt-get update && apt-get install -y chromium"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The browser executable: ``$CHROMIUM`` if set, else the first candidate on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    """The browser did not answer, or answered with a protocol error."""


class Browser:
    """One headless Chromium process and one page (a target attached in flat mode)."""

    def __init__(self, executable: str, profile_dir: Path, *, width: int = 1280,
                 height: int = 900, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Above fd 10, so that placing them at 3 and 4 in the child cannot clobber each other.
        hi_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def place_pipes() -> None:  # in the child, before exec: dup2 clears close-on-exec
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        args = [
            executable, "--headless", "--remote-debugging-pipe", "--no-first-run",
            "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--mute-audio", f"--user-data-dir={profile_dir}",
            f"--window-size={width},{height}",
        ]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
        self._stderr_path = profile_dir / "chromium.stderr"
        profile_dir.mkdir(parents=True, exist_ok=True)
        with open(self._stderr_path, "wb") as err:
            # Its own process group, so that its zygote, GPU and renderer processes go with it.
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         preexec_fn=place_pipes, close_fds=False,
                                         start_new_session=True)
        os.close(hi_r)
        os.close(hi_w)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = ""
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget",
                                     {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable", session=self.session)
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1,
                       "mobile": False}, session=self.session)
        except BaseException:
            self.close()
            raise

    # -- the pipe ---------------------------------------------------------------------------

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._inbox.put(None)  # the browser closed its end: it is gone
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for m in messages:
                self._inbox.put(json.loads(m))

    def stderr_tail(self, n: int = 2000) -> str:
        """The end of the browser's stderr, for failure messages."""
        try:
            return self._stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str = "",
             timeout_s: float | None = None) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept in
        :attr:`events`. Raises :class:`BrowserError` on a protocol error or no answer."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            m = self._next(deadline, f"{method} got no answer")
            if m.get("id") == msg_id:
                if "error" in m:
                    raise BrowserError(f"{method}: {m['error']}")
                result: dict[str, Any] = m.get("result", {})
                return result
            if "method" in m:
                self.events.append(m)

    def _next(self, deadline: float, what: str) -> dict[str, Any]:
        try:
            m = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise BrowserError(f"{what} within {self.timeout_s:.0f} s; chromium said: "
                               f"{self.stderr_tail()}") from None
        if m is None:
            raise BrowserError(f"{what}: chromium exited ({self.proc.poll()}); it said: "
                               f"{self.stderr_tail()}")
        return m

    def wait_event(self, method: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the next event ``method`` of the page (kept in :attr:`events` too)."""
        seen = len(self.events)
        for e in self.events[:seen]:
            if e["method"] == method and not e.get("_waited"):
                e["_waited"] = True
                return e
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            m = self._next(deadline, f"no {method} event")
            if "method" in m:
                self.events.append(m)
                if m["method"] == method:
                    m["_waited"] = True
                    return m

    # -- the page ---------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate the page to ``url`` and wait for its load event."""
        answer = self.call("Page.navigate", {"url": url}, session=self.session)
        if answer.get("errorText"):
            raise BrowserError(f"cannot open {url}: {answer['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, timeout_s: float | None = None) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                           "returnByValue": True},
                      session=self.session, timeout_s=timeout_s)
        if "exceptionDetails" in r:
            raise BrowserError(f"script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the viewport) at ``path``."""
        data = self.call("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True},
                         session=self.session, timeout_s=60)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def console_problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (failed loads) so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error",
                                                                                "assert"):
                out.append("console." + p["type"] + ": " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"uncaught: {d.get('exception', {}).get('description') or d}")
            elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                entry = p["entry"]
                out.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        return out

    def close(self) -> None:
        """Close the browser and wait for its processes (killed if they linger)."""
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                msg = {"id": next(self._ids), "method": "Browser.close"}
                os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        # Whatever is left of its group (a renderer that outlived the browser) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def chromium(profile_dir: Path, **kwargs: Any) -> Iterator[Browser]:
    """A :class:`Browser` that is closed on the way out; raises ``FileNotFoundError`` with
    the install command when there is no Chromium."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError(
            "no Chromium found (looked for $CHROMIUM, " + ", ".join(CANDIDATES) + " on PATH); "
            f"install it: {INSTALL_HINT}")
    b = Browser(exe, profile_dir, **kwargs)
    try:
        yield b
    finally:
        b.close()
