"""The HTML report: one self-contained file per suite (report/index.html), opened without a network.

Built from the report's sections (report.build_reports; this module reads them, report.py never imports it):
per section its warnings, the table (sortable by a click on a header), the recommendation, the interactive
charts of html_charts (a dot per run, hover details) and where the rows came from. plotly's JavaScript is
inlined once per file. Returns text; storage writes it.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from .charts import Chart, crossover_chart, section_charts
from .plots import PlotData, decision_plot
from .recommendation import recommend_section
from .summary import Section, SuiteReport, ranking
from .verdicts import Computes, Level, kind_of

INDEX = "index.html"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-top: 2px solid #ccc; padding-top: 1em; margin-top: 2em; }
.warning { background: #fff3cd; border: 1px solid #e0a800; border-left: 6px solid #e0a800; padding: .6em 1em;
  margin: .8em 0; }
.warning ul { margin: .3em 0; padding-left: 1.2em; }
.recommendation { background: #e8f4ea; border-left: 6px solid #2e7d32; padding: .6em 1em; margin: .8em 0; }
.recommendation.undecided { background: #f2f2f2; border-left-color: #777; }
.scroll { overflow-x: auto; }
table.sortable { border-collapse: collapse; font-size: 12.5px; }
table.sortable th, table.sortable td { border: 1px solid #ddd; padding: 3px 6px; text-align: left;
  vertical-align: top; }
table.sortable th { background: #f2f2f2; cursor: pointer; user-select: none; position: sticky; top: 0; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
table.sortable tr.recommended td { background: #e8f4ea; font-weight: 600; }
.chart { margin: 1em 0 1.5em; } .caption { font-size: 13px; color: #555; margin: 0 0 0 70px; max-width: 1100px; }
dl.provenance { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; font-size: 13px; }
dl.provenance dt { font-weight: 600; } dl.provenance dd { margin: 0; font-family: monospace; }
.notes { font-size: 13px; } pre { font-size: 12px; background: #f7f7f7; padding: .5em; overflow-x: auto; }
"""

# Sort a table on a click on its header: numbers (a cell's leading number, commas dropped) in order and before
# text ('-', 'missed'), text alphabetically; a second click reverses; ties keep their order.
SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var rows = Array.prototype.map.call(body.rows, function (row, i) {
      var text = row.cells[col].textContent.trim();
      var m = text.match(/^[-+]?\\d[\\d,]*(\\.\\d+)?(e[-+]?\\d+)?/i);
      return {row: row, num: m ? parseFloat(m[0].replace(/,/g, "")) : null, text: text, i: i};
    });
    rows.sort(function (a, b) {
      if (a.num !== null && b.num !== null) return dir * (a.num - b.num) || a.i - b.i;
      if (a.num !== null) return -1;
      if (b.num !== null) return 1;
      return dir * a.text.localeCompare(b.text) || a.i - b.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
  });
});
"""


def suite_html(report: SuiteReport) -> str:
    """The whole page of one suite's report."""
    charts: list[str] = []
    body = [f"<h1>lstmbench report: {escape(report.suite)}</h1>"]
    if len(report.sections) > 1:
        body.append("<ul>" + "".join(f'<li><a href="#section-{i + 1}">{escape(s.title)}</a></li>'
                                     for i, s in enumerate(report.sections)) + "</ul>")
    for i, section in enumerate(report.sections):
        body.append(section_html(section, f"section-{i + 1}", charts))
    cross = crossover_chart(report)
    if cross is not None:
        body.append(f"<h2 id=\"crossover\">Crossover: {escape(report.crossover_measure)} by "
                    f"{escape(next(iter(report.sections[0].point)))}</h2>")
        body.append(_chart_html(cross, "crossover-chart", charts))
        body.append(_table(report.crossover().reset_index(names="strategy"), "crossover-table",
                           spec=",.2f" if report.against_naive else ",.0f"))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>lstmbench report: {escape(report.suite)}</title>", f"<style>{STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>' if charts else "",
        "</head><body>", *body, f"<script>{SORT_JS}</script>", "</body></html>", ""])


def section_html(section: Section, anchor: str, charts: list[str]) -> str:
    """One section: title, warnings, recommendation, table, ranking, charts, notes, provenance."""
    winner, why = recommendation(section)
    train = section.config.get("train", {}) if isinstance(section.config, dict) else {}
    parts = [f'<section id="{anchor}"><h2>{escape(section.title)}</h2>']
    if isinstance(section.config, dict) and section.config.get("description"):
        parts.append(f"<p>{escape(section.config['description'])}</p>")
    flagged = warnings(section)
    if flagged:
        parts.append('<div class="warning" role="alert"><b>Check before trusting these numbers:</b><ul>'
                     + "".join(f"<li>{escape(w)}</li>" for w in flagged) + "</ul></div>")
    parts.append(f'<div class="recommendation"><b>Recommended: {escape(winner)}</b>: {escape(why)}</div>' if winner
                 else f'<div class="recommendation undecided"><b>No recommendation</b>: {escape(why)}</div>')
    parts.append(_table(section.table(), f"{anchor}-table", winner))
    rank = ranking(section.summary, train.get("target_accuracy"), train.get("max_time_s"))
    if rank:
        parts.append(f"<pre>{escape(chr(10).join(rank))}</pre>")
    for chart in section_charts(section, winner, why):
        parts.append(_chart_html(chart, f"{anchor}-{chart.key}", charts))
    notes = [n for n in section.notes if kind_of(n, Level.INFO) != Level.WARNING]  # those are in the alert box
    parts.append('<h3>Notes</h3><ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    parts.append(provenance(section))
    parts.append("</section>")
    return "\n".join(parts)


def recommendation(section: Section) -> tuple[str | None, str]:
    """The recommended strategy of a section (report.recommendation's rule) and one sentence why, or, without a
    winner, why not."""
    rec = recommend_section(section)
    return rec.winner, rec.why if rec.winner else (rec.undecided or "the results cannot decide")


def decision_pngs(report: SuiteReport) -> dict[str, bytes]:
    """The decision chart as PNG (for the README and the Markdown report), one per section, the recommended
    strategy marked: made here, above report and recommend, from plain data (plots.PlotData)."""
    out = {}
    for i, s in enumerate(report.sections):
        tag = s.file_tag(i, len(report.sections))
        png = decision_plot(PlotData(s.title, s.suite, s.device, s.summary, s.rows, s.config), recommendation(s)[0])
        if png:
            out[f"decision{tag}.png"] = png
    return out


def warnings(section: Section) -> list[str]:
    """What the statistics or the machine checks flagged: the report's warnings and failures, pooled code,
    unstable throughput, a timed path that did not compute what it claims, a seed limit reached unstable."""
    out = [n for n in section.notes if kind_of(n, Level.INFO) in (Level.WARNING, Level.NOTICE)]
    if section.pooled:
        out.append(f"Rows of different code were pooled into this section: {section.code}.")
    s = section.summary
    if len(s) and "unstable" in s and s["unstable"].fillna(False).astype(bool).any():
        names = ", ".join(s.loc[s["unstable"].fillna(False).astype(bool), "strategy"])
        out.append(f"Unstable throughput (interquartile range over 10% of the median): {names}.")
    if len(s) and "computes_kind" in s:
        for name, what, kind in zip(s["strategy"], s["computes"].astype(str), s["computes_kind"]):
            if kind == Computes.MISMATCH:
                out.append(f"{name}: {what}.")
    return out


def provenance(section: Section) -> str:
    """Where the numbers came from: code, torch, device, machine, configuration, hosts, result files."""
    envs = [e for e in section.rows.get("env", []) if isinstance(e, dict)]

    def values(key: str) -> str:
        found = sorted({str(e[key]) for e in envs if e.get(key) not in (None, "")})
        return ", ".join(found) or "-"

    stamps = sorted(str(e["timestamp"]) for e in envs if e.get("timestamp"))
    files = sorted({Path(str(f)).name for f in section.rows.get("source_file", pd.Series(dtype=str)).dropna()})
    items = [("suite", section.suite), ("configuration hash", section.suite_hash),
             ("swept point", ", ".join(f"{k}={v}" for k, v in section.point.items()) or "-"),
             ("code", section.code), ("lstmbench commit", values("git_commit")), ("lstmbench", values("lstmbench")),
             ("torch", values("torch")), ("CUDA", values("cuda")), ("cuDNN", values("cudnn")),
             ("device", f"{section.device} ({values('device_name')})"), ("machine", section.machine or "-"),
             ("hosts", section.hosts or "-"), ("threads", values("threads")), ("python", values("python")),
             ("measured", f"{stamps[0]} to {stamps[-1]}" if stamps else "-"), ("result files", ", ".join(files) or "-"),
             ("ok runs", str(len(section.rows)))]
    config = json.dumps(section.config, indent=1, sort_keys=True, default=str) if section.config else "{}"
    return ('<h3>Provenance</h3><dl class="provenance">'
            + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items if v not in ("-", "- (-)"))
            + f"</dl><details><summary>The resolved suite configuration (hash {escape(section.suite_hash)})</summary>"
            f"<pre>{escape(config)}</pre></details>")


def _table(frame: pd.DataFrame, table_id: str, highlight: str | None = None, spec: str = ",.2f") -> str:
    head = "".join(f'<th scope="col" title="click to sort">{escape(str(c))}</th>' for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = "".join(f"<td>{escape(_cell(v, spec))}</td>" for v in record)
        mark = ' class="recommended"' if highlight is not None and record[0] == highlight else ""
        rows.append(f"<tr{mark}>{cells}</tr>")
    return (f'<div class="scroll"><table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _cell(value: Any, spec: str) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:{spec}}"
    return str(value)


def _chart_html(chart: Chart, div_id: str, charts: list[str]) -> str:
    """A chart's div and its Plotly.newPlot call (the JavaScript is in the page's head); `charts` collects ids."""
    charts.append(div_id)
    div = pio.to_html(chart.figure, include_plotlyjs=False, full_html=False, div_id=div_id, config=PLOT_CONFIG)
    caption = f'<p class="caption">{escape(chart.caption)}</p>' if chart.caption else ""
    return f'<div class="chart">{div}{caption}</div>'
