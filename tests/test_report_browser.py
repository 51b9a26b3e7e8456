"""The report in a real browser: headless Chromium opens ``index.html``, every image loads, the
claims table is there, the console stays clean, and each timeline links to its Perfetto trace.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it as root); where it is
missing the test fails with the install command, it does not skip.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
from PIL import Image

from research.analysis.report import CLAIM_COLUMNS, TRACE_LINK, VERDICT_CLASSES, make_report

from analysis_data import list_schedule, records, static_blocks, write
from browser import INSTALL_HINT, Browser, chromium, find_chromium

#: Scrolls every image into view (the report's images load lazily, as a reader scrolls), waits
#: until each has loaded or failed, and says what each got.
LOAD_ALL_IMAGES = """(async () => {
  const imgs = [...document.images];
  for (const im of imgs) {
    im.scrollIntoView({block: 'center'});
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  }
  const settled = im => im.complete ? Promise.resolve() : new Promise(r => {
    im.addEventListener('load', r, {once: true});
    im.addEventListener('error', r, {once: true});
  });
  await Promise.race([Promise.all(imgs.map(settled)), new Promise(r => setTimeout(r, 20000))]);
  window.scrollTo(0, 0);
  return imgs.map(im => ({src: im.getAttribute('src'), complete: im.complete,
                          width: im.naturalWidth}));
})()"""

#: The table under the "claims" heading: its header and, per row, each cell's text and class.
CLAIMS_TABLE = """(() => {
  let el = document.getElementById('claims');
  if (!el) return null;
  for (el = el.nextElementSibling; el && el.tagName !== 'TABLE'; el = el.nextElementSibling)
    if (/^H[12]$/.test(el.tagName)) return null;
  if (!el) return null;
  return {header: [...el.querySelectorAll('thead th')].map(th => th.textContent),
          rows: [...el.querySelectorAll('tbody tr')].map(tr => [...tr.cells].map(
            td => [td.textContent, td.className]))};
})()"""

#: Every figure: its image and the absolute URLs of its links named like the trace link.
FIGURE_LINKS = """[...document.querySelectorAll('figure')].map(f => ({
  src: f.querySelector('img').getAttribute('src'),
  traces: [...f.querySelectorAll('a')].filter(a => a.textContent === %s).map(a => a.href)}))"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real report (claims evaluated, figures drawn) of a small hand-made sweep: the talk's
    pair on a worst case at 2 and 3 workers (few figures: each costs about a second)."""
    res = tmp_path_factory.mktemp("browser_res")
    durations = [0.4, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1]
    for n in (2, 3):
        for sched, schedule in (("ipp-direct", static_blocks), ("ipp-lb", list_schedule)):
            write(records(schedule(durations, n), scheduler=sched, workload="worst",
                          n_workers=n), res, params={"durations_s": durations})
    out = tmp_path_factory.mktemp("browser_report")
    make_report(res, out, max_timelines=2)
    return out


def _browser_or_fail(tmp: Path) -> Any:
    if find_chromium() is None:
        pytest.fail("the report's browser test needs Chromium, and none was found "
                    f"($CHROMIUM, or chromium on PATH); install it: {INSTALL_HINT}")
    return chromium(tmp / "profile")


def _open(b: Browser, index: Path) -> tuple[list[dict[str, Any]], int]:
    """Open ``index`` and load every image; (the images, index of this page's first event)."""
    first_event = len(b.events)
    b.open(index.resolve().as_uri())
    return b.evaluate(LOAD_ALL_IMAGES, timeout_s=60), first_event


def _problems_since(b: Browser, first_event: int) -> list[str]:
    kept = b.events
    try:
        b.events = kept[first_event:]
        return b.console_problems()
    finally:
        b.events = kept


@pytest.mark.slow  # builds a whole report and starts a browser
def test_the_report_in_chromium(report_dir: Path, tmp_path: Path, no_leaks: None) -> None:
    index = report_dir / "index.html"
    html = index.read_text()
    n_img = len(re.findall(r"<img ", html))
    claims = pd.read_csv(report_dir / "claims.csv")
    with _browser_or_fail(tmp_path) as b:
        images, first = _open(b, index)
        table = b.evaluate(CLAIMS_TABLE)
        figures = b.evaluate(FIGURE_LINKS % json.dumps(TRACE_LINK))
        shot = b.screenshot(tmp_path / "report.png")
        problems = _problems_since(b, first)

    # Every image the page has loaded, with real pixels.
    assert n_img >= 4 and len(images) == n_img, (n_img, images)
    not_loaded = [i["src"] for i in images if not i["complete"] or i["width"] <= 0]
    assert not not_loaded, f"images that did not load: {not_loaded}"

    # The claims table, under its heading, one row per claim, each verdict styled.
    assert table is not None, "no table under the 'claims' heading"
    assert set(CLAIM_COLUMNS) <= set(table["header"]), table["header"]
    assert len(table["rows"]) == len(claims) > 0
    col = table["header"].index("verdict")
    for row in table["rows"]:
        text, cls = row[col]
        assert text and cls in VERDICT_CLASSES.values(), row

    # No console errors, uncaught exceptions or failed loads.
    assert not problems, f"console: {problems}"

    # Each timeline (single or paired) links to its trace, which Perfetto can read.
    timelines = [f for f in figures if re.search(r"/(timeline|paired)_", f["src"])]
    assert len(timelines) >= 2 and any("/paired_" in f["src"] for f in timelines)
    for f in timelines:
        assert len(f["traces"]) == 1, f
        trace = Path(unquote(urlparse(f["traces"][0]).path))
        assert trace.is_file() and trace.parent == (report_dir / f["src"]).parent, trace
        doc = json.loads(trace.read_text())
        events = doc["traceEvents"]
        procs = {e["pid"] for e in events}
        assert len(procs) == (2 if "/paired_" in f["src"] else 1), f["src"]
        names = [e["args"]["name"] for e in events if e["name"] == "process_name"]
        tasks = [e for e in events if e["ph"] == "X"]
        # The hand-made trials time every task: one event per task of the drawn trial(s).
        assert len(tasks) == sum(_n_tasks(report_dir, n) for n in names), f["src"]
        assert all(e["dur"] > 0 for e in tasks)
    others = [f for f in figures if f not in timelines]
    assert others and all(not f["traces"] for f in others)  # summary figures have none
    # report.md links the same trace files.
    md_traces = re.findall(r"\[Perfetto trace\]\(([^)]+)\)",
                           (report_dir / "report.md").read_text())
    assert sorted(md_traces) == sorted(
        Path(unquote(urlparse(f["traces"][0]).path)).relative_to(report_dir).as_posix()
        for f in timelines)

    # The screenshot: the whole page, not a blank one.
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.width >= 1000 and im.height > 2000, im.size
        colours = im.convert("RGB").resize((200, 200)).getcolors(maxcolors=1 << 16)
        assert colours is not None and len(colours) > 50, "the screenshot looks blank"


def _n_tasks(report_dir: Path, process_name: str) -> int:
    """Tasks of the trial a trace process is named after (``... · <trial_id>``)."""
    trial_id = process_name.rsplit(" · ", 1)[-1]
    summary = pd.read_csv(report_dir / "summary.csv")
    row = summary[summary["trial_id"] == trial_id]
    assert len(row) == 1, process_name
    return int(row["n_tasks"].iloc[0])


@pytest.mark.slow
def test_a_missing_image_is_caught(report_dir: Path, tmp_path: Path, no_leaks: None) -> None:
    """The checks above can fail: a report with one figure gone shows a broken image and a
    failed load in the console."""
    broken = tmp_path / "report"
    shutil.copytree(report_dir, broken)
    gone = sorted((broken / "figures").glob("timeline_*.png"))[0]
    gone.unlink()
    with _browser_or_fail(tmp_path) as b:
        images, first = _open(b, broken / "index.html")
        problems = _problems_since(b, first)
    bad = [i["src"] for i in images if i["width"] <= 0]
    assert bad == [f"figures/{gone.name}"], images
    assert any("ERR_FILE_NOT_FOUND" in p and gone.name in p for p in problems), problems


def test_no_chromium_is_a_failure_that_names_the_install_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-such-browser"))
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        _browser_or_fail(tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install -y chromium"), \
            chromium(tmp_path / "profile"):
        pass
