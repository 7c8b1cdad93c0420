"""report.html in a real headless Chromium: the DOM it builds and the pixels it paints.

Needs Debian's chromium (`apt-get install -y chromium`); skipped with that reason elsewhere."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_bench import smoke_bench_json
from test_report import SIZES, parity_line

from parbench.report.build import build_report
from parbench.report.tables import VERDICT_COLORS


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no headless Chromium here (Debian: apt-get install -y chromium)"
    ),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


class DomCounter(HTMLParser):
    """Counts what the browser's DOM holds: tables by class with their rows, svg drawings."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.svgs: list[int] = []  # drawing elements per svg
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"class": a.get("class"), "rows": 0, "titled_cells": 0})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"] += 1
        elif tag == "td" and self.tables and a.get("title"):
            self.tables[-1]["titled_cells"] += 1
        elif tag == "svg":
            self.svgs.append(0)
        elif tag in ("path", "use", "line", "polyline", "text") and self.svgs:
            self.svgs[-1] += 1


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bench = smoke_bench_json(tmp_path_factory)
    folder = tmp_path_factory.mktemp("browser-report")
    parity = folder / "parity.jsonl"
    lines = [parity_line(m, v, s, "pass") for m in SIZES for v in ("eager", "torchscript") for s in SIZES[m]]
    lines += [
        parity_line("tiny_classifier", "lite", 224, "fail", cosine=0.9),
        parity_line("tiny_generator", "lite", 256, "fail", cosine=0.9),
    ]
    parity.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return build_report([bench, parity], folder / "out").html


def test_dom_has_the_tables_and_plots(report_html: Path, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", report_html.as_uri()).stdout
    counter = DomCounter()
    counter.feed(dom)
    latency = [t for t in counter.tables if t["class"] == "latency"]
    heat = [t for t in counter.tables if t["class"] == "heat"]
    assert len(latency) == len(SIZES)
    assert all(t["rows"] == 1 + 2 for t in latency)  # header + eager, torchscript
    assert all(t["titled_cells"] == 2 * 2 for t in latency)  # a hover title on every timed cell
    assert len(heat) == 1 and heat[0]["rows"] == 1 + 3  # header + eager, torchscript, lite
    assert heat[0]["titled_cells"] == 3 * len(SIZES)
    assert len(counter.svgs) == len(SIZES)
    assert all(n > 50 for n in counter.svgs)  # axes, ticks, lines, markers, labels


def rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)


def pixels_near(img: np.ndarray, hex_colour: str, tol: int = 6) -> int:
    return int((np.abs(img - rgb(hex_colour)).max(axis=-1) <= tol).sum())


def test_screenshot_shows_heatmap_and_plot_lines(report_html: Path, tmp_path: Path) -> None:
    import matplotlib.image

    shot = tmp_path / "report.png"
    chromium(tmp_path, "--window-size=1280,2200", f"--screenshot={shot}", report_html.as_uri())
    img = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(np.int16)
    assert img.shape[:2] == (2200, 1280)
    assert img.std() > 10  # not a blank page
    # the heatmap's cells are painted in the verdict colours: 4 pass cells, 2 fail cells
    assert pixels_near(img, VERDICT_COLORS["pass"]) > 4 * 500
    assert pixels_near(img, VERDICT_COLORS["fail"]) > 2 * 500
    # the latency plots are drawn: matplotlib's first two line colours (eager, torchscript)
    assert pixels_near(img, "#1f77b4", tol=20) > 200
    assert pixels_near(img, "#ff7f0e", tol=20) > 200
