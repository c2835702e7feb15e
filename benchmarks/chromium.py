"""The web demo in headless Chromium: a local static server and a selenium-driven page session.

``serve(model_dir)`` serves ``web_demo/`` (its ``node_modules`` included) on 127.0.0.1 only, with
``/model/`` mapped to a staged model folder. ``PageSession`` starts Debian's ``chromium`` through
its ``chromedriver`` (never a downloaded browser: both paths are given, so selenium's driver
manager is not used) with a fresh profile, opens the page, waits for the model, and classifies
image files by picking them in the page's file input, as a user does; each result is the record
the page keeps in ``window.edgekd`` (web_demo/app.js).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import logging
import posixpath
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kd_core.cli import JobFailed

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
WEB_DIR = ROOT / "web_demo"
LITERT_JS = WEB_DIR / "node_modules" / "@litertjs" / "core"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=800,1000")
_AWAIT = "const done = arguments[arguments.length - 1];"
READY_JS = _AWAIT + " window.edgekd.ready.then(done, (e) => done({error: String(e.message || e)}));"
RESULT_JS = _AWAIT + " window.edgekd.result(arguments[0]).then(done);"
# A user's drop: the file's bytes in a DataTransfer, dropped on the page's drop zone.
DROP_JS = _AWAIT + """
const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], arguments[1]));
document.getElementById('drop').dispatchEvent(
  new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
window.edgekd.result(arguments[2]).then(done);"""


class PageError(JobFailed):
    """The page or the browser failed: the model did not load, an image could not be
    classified, Chromium did not start or timed out."""


def _driver_error(exc: Exception, what: str) -> PageError:
    lines = (getattr(exc, "msg", None) or str(exc)).strip().splitlines()
    return PageError(f"{what}: {type(exc).__name__}: {lines[0] if lines else ''}")


class _Handler(http.server.SimpleHTTPRequestHandler):
    model_dir = Path()
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,  # noqa: RUF012
                      ".js": "text/javascript", ".wasm": "application/wasm",
                      ".json": "application/json", ".tflite": "application/octet-stream"}

    def translate_path(self, path: str) -> str:
        url = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
        if url.startswith("/model/"):  # only the staged files, never a path outside them
            return str(self.model_dir / posixpath.basename(url))
        return super().translate_path(path)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


@contextlib.contextmanager
def serve(model_dir: Path, root: Path = WEB_DIR) -> Iterator[str]:
    """Serve ``root`` with ``/model/`` -> ``model_dir`` on 127.0.0.1 (a free port); yield the
    page's URL."""
    handler = type("Handler", (_Handler,), {"model_dir": Path(model_dir)})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="web-demo-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def find_browser(chromium: str | None, chromedriver: str | None) -> tuple[str, str]:
    """The Chromium and ChromeDriver executables (given, else on PATH), or a ``FileNotFoundError``
    that says how to install them."""
    found = []
    for given, name in ((chromium, "chromium"), (chromedriver, "chromedriver")):
        path = shutil.which(given or name)
        if path is None:
            raise FileNotFoundError(
                f"{given or name}: not found; install Debian's chromium and chromium-driver "
                "(apt-get install chromium chromium-driver) or pass --chromium/--chromedriver")
        found.append(path)
    return found[0], found[1]


class PageSession:
    """One Chromium with the demo page open; a context manager (``with PageSession(...) as s``)."""

    def __init__(self, url: str, chromium: str, chromedriver: str, timeout_s: float) -> None:
        self.url, self.chromium, self.chromedriver = url, chromium, chromedriver
        self.timeout_s = timeout_s
        self.info: dict[str, Any] = {}
        self._profile = tempfile.TemporaryDirectory(prefix="edgekd-chromium-")
        self._driver: Any = None
        self._count = 0

    def __enter__(self) -> PageSession:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = self.chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}"):
            options.add_argument(flag)
        try:
            self._driver = webdriver.Chrome(service=Service(self.chromedriver), options=options)
            self._driver.set_script_timeout(self.timeout_s)
            self._driver.set_page_load_timeout(self.timeout_s)
            self._driver.get(self.url)
            info = self._driver.execute_async_script(READY_JS)
        except WebDriverException as exc:
            self.__exit__()
            raise _driver_error(exc, f"Chromium ({self.chromium}) on {self.url}") from None
        except BaseException:
            self.__exit__()
            raise
        if "error" in info:
            self.__exit__()
            raise PageError(f"the web demo could not load the model: {info['error']}")
        self.info = {**info, "browser": self._driver.capabilities.get("browserName"),
                     "browser_version": self._driver.capabilities.get("browserVersion")}
        return self

    def __exit__(self, *exc: object) -> None:
        if self._driver is not None:
            with contextlib.suppress(Exception):
                self._driver.quit()
            self._driver = None
        self._profile.cleanup()

    def classify(self, image: Path, drop: bool = False) -> dict[str, Any]:
        """Pick ``image`` in the page's file input (or drop it on the page, ``drop``); the
        page's record of it."""
        import base64

        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By

        try:
            if drop:
                data = base64.b64encode(Path(image).read_bytes()).decode()
                record: dict[str, Any] = self._driver.execute_async_script(
                    DROP_JS, data, Path(image).name, self._count)
            else:
                self._driver.find_element(By.ID, "file").send_keys(str(Path(image).resolve()))
                record = self._driver.execute_async_script(RESULT_JS, self._count)
        except WebDriverException as exc:
            raise _driver_error(exc, f"{image}: Chromium") from None
        self._count += 1
        if "error" in record:
            raise PageError(f"{image}: the web demo failed on it: {record['error']}")
        return record

    def text(self, element_id: str) -> str:
        """The visible text of the page's element ``element_id``."""
        from selenium.webdriver.common.by import By

        return str(self._driver.find_element(By.ID, element_id).text)

    def screenshot(self, path: Path) -> None:
        """A PNG of the page as it is now, written atomically."""
        from kd_core.io import atomic_write_bytes

        atomic_write_bytes(path, self._driver.get_screenshot_as_png())
