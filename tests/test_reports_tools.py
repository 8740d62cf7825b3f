"""The reports in the programs that read them: LibreOffice opens each workbook (PDF and ODS conversions,
charts included) and headless Chromium loads each page offline, with no console error, no network
request, and charts drawn on a screenshot.

Both programs come from Debian's packages (`.ci/run` installs them); a missing one fails these tests.
Chromium is driven through the DevTools protocol over a pipe (--remote-debugging-pipe): no websocket, no
browser download, no extra Python package.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import struct
import subprocess
import textwrap
import time
import zipfile
import zlib
from datetime import date, datetime
from pathlib import Path

import pytest

from dropkit import report_warehouse
from pilotage.cubes import Cube
from pilotage.reports import render_report
from pilotage.reports.html import PALETTE

INSTALL = "apt-get install -y --no-install-recommends chromium libreoffice-calc-nogui fonts-dejavu-core"


def tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} is not installed (CI installs it: {INSTALL})")



TRAP = """
    report: trap
    title: "=1+1 <script>alert(1)</script>"
    per: nation
    queries:
      q: {measures: [entries], by: [measure], period: week}
    blocks:
      - {id: "x<y", type: chart, chart: line, title: "<img src=x onerror=alert(2)>", query: q, x: measure,
         values: [entries]}
"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports-tools")
    (out / "defs").mkdir()
    (out / "defs" / "trap.yml").write_text(textwrap.dedent(TRAP), encoding="utf-8")
    cube = Cube(report_warehouse(tmp_path_factory))
    generated = datetime(2006, 3, 16, 7, 30)
    paths = render_report(cube, "daily", as_of=date(2006, 3, 15), out_dir=out, generated_at=generated)
    paths += render_report(cube, "weekly-regional", week="2006-W10", region="25", out_dir=out,
                           generated_at=generated)
    paths += render_report(cube, "trap", formats=["html"], out_dir=out, definitions=[out / "defs"],
                           generated_at=generated)
    return {p.name: p for p in paths}


# -- LibreOffice ---------------------------------------------------------------------------------------

def convert(soffice: str, files: list[Path], to: str, out: Path) -> None:
    profile = out / "profile"
    subprocess.run([soffice, "--headless", "--norestore", f"-env:UserInstallation={profile.as_uri()}",
                    "--convert-to", to, "--outdir", str(out), *map(str, files)],
                   check=True, capture_output=True, timeout=240)


def test_libreoffice_opens_each_workbook_with_its_charts(reports, tmp_path):
    soffice = tool("soffice", "libreoffice")
    workbooks = sorted(p for name, p in reports.items() if name.endswith(".xlsx"))
    assert len(workbooks) == 2
    convert(soffice, workbooks, "pdf", tmp_path)
    convert(soffice, workbooks, "ods", tmp_path)
    for workbook in workbooks:
        with zipfile.ZipFile(workbook) as archive:
            charts = [n for n in archive.namelist() if re.fullmatch(r"xl/charts/chart\d+\.xml", n)]
        assert len(charts) == 4
        pdf = (tmp_path / workbook.name).with_suffix(".pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 9  # a page per sheet at least
        # LibreOffice read the charts as charts: each is a chart object of the converted spreadsheet
        with zipfile.ZipFile((tmp_path / workbook.name).with_suffix(".ods")) as ods:
            objects = [n for n in ods.namelist() if re.fullmatch(r"Object \d+/content\.xml", n)]
            kinds = [re.search(rb'chart:class="chart:(\w+)"', ods.read(n)).group(1) for n in objects]
        assert sorted(kinds) == [b"bar", b"bar", b"line", b"line"]


# -- Chromium ----------------------------------------------------------------------------------------

class Browser:
    """Headless Chromium driven through the DevTools protocol over a pipe."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-extensions",
             "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe"]

    def __init__(self, executable: str, profile: Path):
        to_child, self._writer = os.pipe()
        self._reader, from_child = os.pipe()

        def pipes_on_3_and_4():
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.process = subprocess.Popen(
            [executable, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=pipes_on_3_and_4, pass_fds=(3, 4))
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._last, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=self.session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=self.session)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        self._last += 1
        message = {"id": self._last, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._writer, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._last:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive(deadline))
        return next(e for e in self.events if e.get("method") == method)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=self.session)
        return result["result"].get("value")

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._reader], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._reader, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def open(self, url: str) -> dict:
        """Load a page; return what it did: console errors, requests, dialogs."""
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=self.session)
        self.wait_for("Page.loadEventFired")
        deadline = time.monotonic() + 20
        script = ("Array.from(document.querySelectorAll('.plotly-graph-div'))"
                  ".every(d => d.querySelector('.main-svg'))")
        while not self.evaluate(script) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        return self.report(url)

    def report(self, url: str) -> dict:
        errors, requests, dialogs = [], [], []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(params["args"])
            elif method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"])
            elif method == "Network.requestWillBeSent":
                if params["request"]["url"] != url and not params["request"]["url"].startswith("data:"):
                    requests.append(params["request"]["url"])
            elif method == "Page.javascriptDialogOpening":
                dialogs.append(params["message"])
        return {"errors": errors, "requests": requests, "dialogs": dialogs}

    def screenshot(self, clip: dict, scale: float = 0.5) -> bytes:
        result = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                      "clip": {**clip, "scale": scale}}, session=self.session)
        return base64.b64decode(result["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._writer)
        os.close(self._reader)


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit RGB or RGBA PNG (a small zlib decoder)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, compressed = 8, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
        elif kind == b"IDAT":
            compressed += body
        position += 12 + length
    size = 4 if colour == 6 else 3
    raw, stride = zlib.decompress(compressed), width * size
    pixels, above = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - size] if i >= size else 0
            corner = above[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + above[i]) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + above[i]) // 2) & 255
            elif kind == 4:
                p = left + above[i] - corner
                near = min((abs(p - left), 0, left), (abs(p - above[i]), 1, above[i]), (abs(p - corner), 2, corner))
                line[i] = (line[i] + near[2]) & 255
        pixels += [tuple(line[x:x + 3]) for x in range(0, stride, size)]
        above = line
    return width, height, pixels


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = tool("chromium", "chromium-browser", "google-chrome")
    instance = Browser(chromium, tmp_path_factory.mktemp("chromium-profile"))
    yield instance
    instance.close()


def test_the_harness_sees_console_errors_and_requests(browser, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html lang="fr"><head><link rel="icon" href="data:,"></head><body>'
                    '<script>console.error("boom")</script><img src="http://127.0.0.1:9/x.png"></body></html>')
    seen = browser.open(page.as_uri())
    assert seen["errors"] and seen["requests"] == ["http://127.0.0.1:9/x.png"]


@pytest.mark.parametrize("name", ["quotidien_2006-03-15.html", "hebdo_region-25_2006-W10.html",
                                  "trap_2006-03-31.html"])
def test_each_page_loads_offline_without_error_and_draws_its_charts(browser, reports, name):
    url = reports[name].as_uri()
    seen = browser.open(url)
    assert seen == {"errors": [], "requests": [], "dialogs": []}
    charts = browser.evaluate(
        "Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => {"
        " const r = d.getBoundingClientRect();"
        " return {id: d.id, x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height,"
        " marks: d.querySelectorAll('.trace .point, .trace path.js-line').length}; })")
    assert charts and all(c["marks"] > 0 and c["height"] > 200 for c in charts)
    palette = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in PALETTE[:4]]
    for chart in charts:
        clip = {k: chart[k] for k in ("x", "y", "width", "height")}
        _, _, pixels = png_pixels(browser.screenshot(clip))
        coloured = sum(1 for p in pixels if any(sum(abs(a - b) for a, b in zip(p, c)) < 60 for c in palette))
        assert coloured > 100, f"{name}: chart {chart['id']} has no series drawn"  # axes and text are grey
    assert browser.evaluate("document.title").startswith("=1+1 <script>" if name.startswith("trap") else "")
    assert browser.evaluate("document.querySelectorAll('img, body script:not([src])').length") == \
        browser.evaluate("document.querySelectorAll('.plotly-graph-div').length")
