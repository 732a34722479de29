"""The HTML report (report/index.html): self-contained, the sections and charts the rows call for, and, in a real
browser (playwright driving Chromium), every chart drawn, no console error, the table sorting on a click."""
from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from plotly.offline import get_plotlyjs

from lstmbench.cli import main
from lstmbench.report import html, summary as report
from lstmbench.report.charts import pareto
from lstmbench.results import storage

ROOT = Path(__file__).parent.parent
GPU_ROWS = Path(__file__).parent / "data" / "gpu-h200" / "gpu.jsonl"  # one seed per strategy on an NVIDIA H200
DDP_KEEP = {"mask", "bucket-mask", "bucket-mask-balanced"}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """`lstmbench report` over committed rows: packing (CPU, 3 seeds), a DDP sweep (two points, three
    strategies) and CUDA rows; suite -> its index.html."""
    tmp = tmp_path_factory.mktemp("html")
    rows = tmp / "rows"
    for suite in ("packing", "gpu", "ddp"):
        (rows / suite).mkdir(parents=True)
    for f in (ROOT / "reference" / "packing").glob("*.jsonl"):
        shutil.copy(f, rows / "packing" / f.name)
    shutil.copy(GPU_ROWS, rows / "gpu" / GPU_ROWS.name)
    ddp = [line for f in (ROOT / "reference" / "ddp").glob("*.jsonl") for line in f.read_text().splitlines()
           if json.loads(line)["strategy"] in DDP_KEEP]
    (rows / "ddp" / "ddp.jsonl").write_text("\n".join(ddp) + "\n")
    out = tmp / "out"
    r = CliRunner().invoke(main, ["report", str(rows), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return {suite: out / suite / html.INDEX for suite in ("packing", "gpu", "ddp")}


def chart_ids(page: str) -> list[str]:
    return re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', page)


@pytest.mark.slow
def test_self_contained(written):
    bundle = get_plotlyjs()[:300]
    for path in written.values():
        page = path.read_text(encoding="utf-8")
        assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", page, re.I)
        assert page.count(bundle) == 1  # plotly's JavaScript inlined once
        assert page.count("Plotly.newPlot(") == len(chart_ids(page)) > 0


def test_sections_and_charts(written):
    packing, gpu, ddp = (written[s].read_text(encoding="utf-8") for s in ("packing", "gpu", "ddp"))
    assert chart_ids(packing) == [f"section-1-{k}" for k in ("decision", "curve", "by_length", "throughput", "memory")]
    assert chart_ids(gpu) == [f"section-1-{k}" for k in ("decision", "curve", "throughput", "memory")]  # schema 1
    assert chart_ids(ddp) == [f"section-1-{k}" for k in ("decision", "curve", "throughput", "memory")] + \
        [f"section-2-{k}" for k in ("decision", "curve", "throughput", "memory", "straggler")] + ["crossover-chart"]
    assert "CUDA allocator reserved peak" in gpu and "process peak RSS the run added" in packing
    rows = storage.load_rows([ROOT / "reference" / "packing"]).rows
    (section,) = report.build_reports(rows)[0].sections
    for column in section.table().columns:  # the Markdown report's columns
        assert f'title="click to sort">{column}</th>' in packing.replace("&#x27;", "'")
    assert f"lstmbench commit</dt><dd>{rows['env'].iloc[0]['git_commit']}</dd>" in packing
    assert f"configuration hash</dt><dd>{section.suite_hash}" in packing and "torch</dt><dd>2.13.0+cpu" in packing
    assert '<div class="warning" role="alert">' in packing and "Unstable throughput" in packing
    winner = re.search(r"<b>Recommended: ([^<]+)</b>", packing).group(1)
    assert re.search(rf'<tr class="recommended"><td>{re.escape(winner)}</td>', packing)
    assert "Recommended: " + winner in packing and "recommended: " + winner in packing  # the box and the chart


def test_report_never_imports_html():
    tree = ast.parse((ROOT / "lstmbench" / "report" / "summary.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and "html" in m}


def test_pareto_and_the_recommendation_marked():
    assert pareto([1.0, 2.0, 3.0, 0.5], [0.9, 0.95, 0.94, 0.5], smaller_x=True) == [3, 0, 1]
    assert pareto([100.0, 300.0, 200.0], [0.9, 0.8, 0.95], smaller_x=False) == [1, 2]
    rows = storage.load_rows([ROOT / "reference" / "packing"]).rows
    (suite_report,) = report.build_reports(rows)
    winner, why = html.recommendation(suite_report.sections[0])
    assert winner == "bucket-mask" and why.startswith("fastest exact strategy to 0.9")
    pngs = html.decision_pngs(suite_report)
    assert list(pngs) == ["decision.png"] and pngs["decision.png"].startswith(b"\x89PNG")


def _browser(playwright):
    executable = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    try:
        return playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    except Exception as e:  # noqa: BLE001 - no system Chromium and no browser of playwright's own
        pytest.skip(f"no Chromium to drive (install Debian's chromium, as .ci/run does): {e}")


@pytest.mark.slow
def test_in_a_browser(written, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            for suite, path in written.items():
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                problems: list[str] = []
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.goto(path.as_uri(), wait_until="load")
                page.wait_for_function("Array.from(document.querySelectorAll('.plotly-graph-div'))"
                                       ".every(d => d.querySelector('.main-svg'))", timeout=20_000)
                drawn = page.evaluate("""Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => [d.id,
                    d.querySelectorAll('.main-svg .trace').length,
                    d.querySelectorAll('.main-svg .point, .main-svg path.js-line').length])""")
                assert drawn and all(traces > 0 and marks > 0 for _, traces, marks in drawn), (suite, drawn)
                assert problems == [], (suite, problems)
                _check_sorting(page)
                page.screenshot(path=str(tmp_path / f"{suite}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
    assert all((tmp_path / f"{s}.png").stat().st_size > 10_000 for s in written)


def _check_sorting(page) -> None:
    """Click the tokens/s header of the first table: ascending by the number (not the text: 9 < 10), then
    descending, the same rows reversed."""
    table = page.locator("table.sortable").first
    header = table.locator("th", has_text="tokens/s")
    column = header.evaluate("th => th.cellIndex") + 1
    names = lambda: table.locator("tbody tr td:first-child").all_inner_texts()  # noqa: E731
    speeds = lambda: [float(t.split()[0].replace(",", ""))  # noqa: E731
                      for t in table.locator(f"tbody tr td:nth-child({column})").all_inner_texts()]
    before = names()
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    ascending = names()
    assert speeds() == sorted(speeds()) and sorted(ascending) == sorted(before)
    header.click()
    assert header.get_attribute("aria-sort") == "descending" and speeds() == sorted(speeds(), reverse=True)
    assert names() == ascending[::-1] != ascending
