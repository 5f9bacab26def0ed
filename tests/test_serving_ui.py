"""The upload page in headless Chromium: drop a CT slice, see the probabilities and the Grad-CAM overlay.

Chromium is driven over the DevTools protocol (websocket-client). ``make test`` installs Debian's
``chromium`` (``make test-deps``); without it these tests skip. Screenshots are written to the test's
``tmp_path`` and, when ``RADPIPE_SCREENSHOT_DIR`` is set, copied there for a person to look at.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLE, SAMPLE_CLASSES, ServerProcess, free_port, infer_image
from dicom_samples import ct_from_png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed: run `make test-deps` (apt-get install chromium) to test the page",
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


class Browser:
    """One Chromium page, spoken to over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        import websocket

        port = free_port()
        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        pages: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not pages:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                    pages = [t for t in json.load(response) if t.get("type") == "page"]
            except OSError:
                time.sleep(0.3)
        if not pages:
            self.close()
            raise TimeoutError("chromium's DevTools endpoint did not come up within 60 s")
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self._ids = itertools.count(1)
        self.console: list[str] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(message["params"]["exceptionDetails"])[:500])
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{expression} stayed false for {timeout} s; page errors: {self.console}")

    def upload(self, selector: str, path: Path) -> None:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def screenshot(self, target: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        target.write_bytes(base64.b64decode(data))
        shots = os.environ.get("RADPIPE_SCREENSHOT_DIR")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            shutil.copy(target, Path(shots) / target.name)
        return target

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    page = Browser(tmp_path / "chromium-profile")
    try:
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("DOM.enable")
        page.send("Emulation.setDeviceMetricsOverride", width=1100, height=640, deviceScaleFactor=1, mobile=False)
        yield page
    finally:
        page.close()


def _open(browser: Browser, server: ServerProcess) -> None:
    browser.send("Page.navigate", url=f"{server.url}/ui/")
    assert browser.wait_for("document.body && document.body.dataset.ready") == "yes", browser.console


def test_dropping_a_ct_slice_shows_probabilities_and_gradcam(
    browser: Browser, model_server: ServerProcess, tmp_path: Path
) -> None:
    _open(browser, model_server)
    assert "chest-ct" in browser.evaluate("document.getElementById('model').textContent")
    image = SAMPLE / "test" / "squamous.cell.carcinoma" / "000137.png"
    browser.upload("#file", image)
    assert (
        browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
        == "done"
    ), browser.evaluate("document.getElementById('error').textContent")
    # The overlay is decoded by the browser: a real image, not a broken one.
    browser.wait_for(
        "document.getElementById('overlay').complete && document.getElementById('overlay').naturalWidth > 0"
    )
    browser.wait_for(
        "document.getElementById('original').complete && document.getElementById('original').naturalWidth > 0"
    )
    shown = browser.evaluate(
        """(() => ({
            label: document.getElementById('label').textContent,
            rows: [...document.querySelectorAll('#probabilities .row')].map(r => [
                r.dataset.class, parseFloat(r.querySelector('.probability').textContent)]),
            top: document.querySelector('#probabilities .row.top').dataset.class,
            overlay: document.getElementById('overlay').naturalWidth,
            error: document.getElementById('error').textContent,
        }))()"""
    )
    shot = browser.screenshot(tmp_path / "serving-ui.png")
    assert shot.stat().st_size > 10_000
    # The page shows what the API answers for the same file.
    answer = infer_image(model_server.url, "chest-ct", image)
    assert shown["error"] == ""
    assert shown["label"] == answer["label"]["data"][0] == shown["top"]
    assert sorted(c for c, _ in shown["rows"]) == sorted(SAMPLE_CLASSES)
    api = dict(zip(SAMPLE_CLASSES, answer["probabilities"]["data"], strict=True))
    for name, percent in shown["rows"]:
        assert percent == pytest.approx(100 * api[name], abs=0.051)
    assert [p for _, p in shown["rows"]] == sorted((p for _, p in shown["rows"]), reverse=True)
    assert shown["overlay"] == 32


def test_a_file_that_is_not_an_image_shows_the_servers_message(
    browser: Browser, model_server: ServerProcess, tmp_path: Path
) -> None:
    _open(browser, model_server)
    report = tmp_path / "report.png"  # named like an image, but it is text
    report.write_text("CT THORAX: no acute findings.\n")
    browser.upload("#file", report)
    assert (
        browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
        == "error"
    )
    message = browser.evaluate("document.getElementById('error').textContent")
    assert "400" in message and "not an image" in message
    browser.screenshot(tmp_path / "serving-ui-error.png")
    assert model_server.proc.poll() is None


def test_with_a_token_the_page_asks_for_it_keeps_it_in_memory_and_classifies(
    browser: Browser, secured_server: ServerProcess, tmp_path: Path
) -> None:
    from conftest import INFERENCE_TOKEN

    browser.send("Page.navigate", url=f"{secured_server.url}/ui/")
    assert browser.wait_for("document.body && document.body.dataset.ready") == "token", browser.console
    assert browser.evaluate("document.getElementById('auth').hidden") is False
    assert "needs an access token" in browser.evaluate("document.getElementById('auth').textContent")

    def submit(token: str) -> str:
        browser.evaluate(
            f"document.body.dataset.ready = ''; document.getElementById('token').value = {json.dumps(token)}; "
            "document.getElementById('auth').requestSubmit()"
        )
        return browser.wait_for("document.body.dataset.ready")

    assert submit("not-the-token-at-all") == "token"
    assert "refused this token" in browser.evaluate("document.getElementById('error').textContent")
    assert submit(INFERENCE_TOKEN) == "yes", browser.evaluate("document.getElementById('error').textContent")
    assert browser.evaluate("document.getElementById('auth').hidden") is True
    assert "version 7" in browser.evaluate("document.getElementById('model').textContent")
    assert browser.evaluate("document.getElementById('token').value") == ""  # not left in the field

    image = SAMPLE / "test" / "adenocarcinoma" / "000114.png"
    browser.upload("#file", image)
    assert (
        browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
        == "done"
    ), browser.evaluate("document.getElementById('error').textContent")
    browser.screenshot(tmp_path / "serving-ui-token.png")
    request = urllib.request.Request(
        f"{secured_server.url}/v2/models/chest-ct/infer",
        data=json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1],
                        "datatype": "BYTES",
                        "data": [base64.b64encode(image.read_bytes()).decode()],
                    }
                ]
            }
        ).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {INFERENCE_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        label = {o["name"]: o for o in json.load(response)["outputs"]}["label"]["data"][0]
    assert browser.evaluate("document.getElementById('label').textContent") == label
    # Nothing of the token outlives the page: no storage, no cookie.
    stored = browser.evaluate("localStorage.length + sessionStorage.length + document.cookie.length")
    assert stored == 0


def test_dropping_a_dicom_file_shows_the_answer_of_the_api(
    browser: Browser, model_server: ServerProcess, tmp_path: Path
) -> None:
    _open(browser, model_server)
    dicom_file = ct_from_png(SAMPLE / "test" / "normal" / "10 - Copy (3).png", tmp_path / "1.2.840.7")  # no extension
    browser.upload("#file", dicom_file)
    assert (
        browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
        == "done"
    ), browser.evaluate("document.getElementById('error').textContent")
    browser.wait_for(
        "document.getElementById('overlay').complete && document.getElementById('overlay').naturalWidth > 0"
    )
    shown = browser.evaluate(
        """(() => ({
            label: document.getElementById('label').textContent,
            originalHidden: document.getElementById('original').hidden,
            caption: document.getElementById('original-caption').textContent,
        }))()"""
    )
    browser.screenshot(tmp_path / "serving-ui-dicom.png")
    answer = infer_image(model_server.url, "chest-ct", dicom_file)
    assert shown["label"] == answer["label"]["data"][0]
    assert shown["originalHidden"] is True and "DICOM, windowed by the server" in shown["caption"]
