"""A single self-contained ``index.html``: figures as base64 PNG data URIs, Markdown tables
rendered to HTML, inline CSS, a header with the provenance of the records (results dir, runs
done / failed, code version and hardware from the records' ``meta`` lines) and a section
listing the failed runs with their errors. No network, no template engine, no markdown library.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
 color:#222;background:#fafafa}
header{background:#1f3a5f;color:#fff;padding:16px 28px}
header h1{margin:0 0 6px;font-size:22px}
header dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0;font-size:13px}
header dt{font-weight:600;opacity:.85}
header dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace}
main{padding:8px 28px 40px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:18px 0;
 padding:6px 18px 14px}
h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:4px}
h3{font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px}
th{background:#f0f3f7}
tr:nth-child(even) td{background:#fafcff}
figure{margin:10px 0;display:inline-block;vertical-align:top}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555}
.failed td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre-wrap}
.ok{color:#1a7f37}.bad{color:#b42318;font-weight:600}
.files a{margin-right:10px;font-size:13px}
"""


# ---------------------------------------------------------------------------------------------
# Markdown tables


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def _inline(text: str) -> str:
    """Escape, then the few inline marks tables use: **bold**, *italic*, `code`."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def _table(lines: list[str]) -> str:
    head = _cells(lines[0])
    aligns = []
    for c in _cells(lines[1]):
        left, right = c.startswith(":"), c.endswith(":")
        aligns.append("center" if left and right else "right" if right else "left")
    out = ["<table>", "<thead><tr>"]
    for i, h in enumerate(head):
        a = aligns[i] if i < len(aligns) else "left"
        out.append(f'<th style="text-align:{a}">{_inline(h)}</th>')
    out.append("</tr></thead><tbody>")
    for line in lines[2:]:
        cells = _cells(line)
        out.append("<tr>")
        for i in range(len(head)):
            a = aligns[i] if i < len(aligns) else "left"
            v = cells[i] if i < len(cells) else ""
            out.append(f'<td style="text-align:{a}">{_inline(v)}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def markdown_to_html(text: str) -> str:
    """Render the Markdown that table files hold: pipe tables (with alignment), ``#`` headings
    (as h3-h5), ``- `` bullet lists (indented lines continue an item) and paragraphs;
    everything else is escaped text."""
    lines = text.splitlines()
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if "|" in line and i + 1 < len(lines) and _SEP.match(lines[i + 1]):
            flush()
            j = i + 2
            while j < len(lines) and lines[j].strip() and "|" in lines[j]:
                j += 1
            out.append(_table(lines[i:j]))
            i = j
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            flush()
            level = min(len(m.group(1)) + 2, 5)
            out.append(f"<h{level}>{_inline(m.group(2).strip())}</h{level}>")
        elif line.startswith("- "):
            if para:
                flush()
            items.append(line[2:].strip())
        elif items and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
        elif line.strip():
            if items:
                flush()
            para.append(line.strip())
        else:
            flush()
        i += 1
    flush()
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# provenance


def read_meta(results_dir: Path | str) -> list[dict]:
    """The ``meta`` line of every record under ``results_dir``."""
    from bench.core.records import iter_records

    return [r for r in iter_records(Path(results_dir)) if r.get("type") == "meta"]


def hardware_str(hw) -> str:
    if isinstance(hw, dict):
        keys = ["device", "gpu", "cpu", "cpu_count", "host", "torch", "python"]
        parts = [f"{k}={hw[k]}" for k in keys if hw.get(k) not in (None, "")]
        parts += [f"{k}={v}" for k, v in hw.items() if k not in keys and not isinstance(v, dict)]
        return ", ".join(parts)
    return json.dumps(hw, default=str) if hw is not None else "unknown"


def _counted(values: Iterable[str]) -> str:
    c = Counter(values)
    if not c:
        return "unknown"
    if len(c) == 1:
        return next(iter(c))
    return "; ".join(f"{v} ({n} runs)" for v, n in c.most_common())


# ---------------------------------------------------------------------------------------------
# page


def _rel(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_uri()


def _img(path: Path, base: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    pdf = Path(path).with_suffix(".pdf")
    cap = html.escape(Path(path).stem)
    if pdf.exists():
        cap += f' &middot; <a href="{html.escape(_rel(pdf, base))}">PDF</a>'
    return (
        f'<figure><img alt="{html.escape(Path(path).stem)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>'
    )


def render(
    results_dir: Path | str,
    runs: pd.DataFrame,
    figures: list[tuple[str, list[Path]]],
    tables: list[Path],
    out_path: Path | str,
    meta: list[dict] | None = None,
    other_files: list[Path] | None = None,
    pages: list[tuple[str, Path]] | None = None,
) -> Path:
    """Write the report page to ``out_path`` and return it. ``figures`` is
    ``[(section title, paths)]`` (only the PNGs are embedded), ``tables`` Markdown files whose
    tables are embedded, ``other_files`` (.tex, .csv, .pdf) linked by relative name, ``pages``
    ``[(section title, Markdown file)]`` each embedded as its own section after the tables
    (its leading ``# `` heading dropped), e.g. the reproduction page."""
    out_path = Path(out_path)
    meta = read_meta(results_dir) if meta is None else meta
    status = runs["status"] if not runs.empty else pd.Series(dtype=object)
    n_done, n_failed = int((status == "done").sum()), int((status == "failed").sum())
    versions = _counted(str(m.get("code_version", "unknown")) for m in meta)
    hardware = _counted(hardware_str(m.get("hardware")) for m in meta)
    suites = sorted({str(m.get("spec", {}).get("suite")) for m in meta if m.get("spec")})

    e = html.escape
    body = [
        "<header><h1>Unlearning benchmark report</h1><dl>",
        f"<dt>results</dt><dd>{e(str(Path(results_dir).resolve()))}</dd>",
        f"<dt>suites</dt><dd>{e(', '.join(suites) or 'unknown')}</dd>",
        f'<dt>runs</dt><dd><span class="ok">{n_done} done</span>, '
        f'<span class="{"bad" if n_failed else "ok"}">{n_failed} failed</span>'
        f"{f', {len(runs) - n_done - n_failed} other' if len(runs) > n_done + n_failed else ''}"
        "</dd>",
        f"<dt>code version</dt><dd>{e(versions)}</dd>",
        f"<dt>hardware</dt><dd>{e(hardware)}</dd>",
        "</dl></header><main>",
    ]
    if tables:
        body.append("<section><h2>Tables</h2>")
        for t in tables:
            body.append(f"<h3>{e(Path(t).stem)}</h3>")
            body.append(markdown_to_html(Path(t).read_text(encoding="utf-8")))
        body.append("</section>")
    for title, page in pages or []:
        text = Path(page).read_text(encoding="utf-8")
        text = re.sub(r"\A# [^\n]*\n", "", text)
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        body.append(f'<section id="{e(slug)}"><h2>{e(title)}</h2>')
        body.append(markdown_to_html(text))
        body.append("</section>")
    for title, paths in figures:
        pngs = [p for p in paths if Path(p).suffix == ".png" and Path(p).exists()]
        if pngs:
            body.append(f"<section><h2>{e(title)}</h2>")
            body += [_img(p, out_path.parent) for p in pngs]
            body.append("</section>")
    if not tables and not figures:
        body.append("<section><h2>No results</h2><p>No finished run has data to plot.</p>")
        body.append("</section>")
    # damaged: a record file that is not whole (its rows are left out; a rerun redoes it)
    failed = runs[runs["status"].isin(["failed", "damaged"])] if not runs.empty else runs
    body.append(f'<section id="failed-runs"><h2>Failed runs ({len(failed)})</h2>')
    if len(failed):
        body.append('<table class="failed"><tr><th>run_id</th><th>method</th><th>seed</th>')
        body.append("<th>error</th></tr>")
        for _, r in failed.iterrows():
            seed = "" if pd.isna(r.get("seed")) else str(r.get("seed"))
            error = str(r.get("error") or "")
            if r["status"] == "damaged":
                error = f"damaged record: {error}"
            body.append(
                f"<tr><td>{e(str(r['run_id']))}</td><td>{e(str(r.get('method') or ''))}</td>"
                f"<td>{e(seed)}</td><td>{e(error)}</td></tr>"
            )
        body.append("</table>")
    else:
        body.append("<p>None.</p>")
    body.append("</section>")
    if other_files:
        body.append('<section><h2>Files</h2><p class="files">')
        for f in other_files:
            rel = _rel(Path(f), out_path.parent)
            body.append(f'<a href="{e(rel)}">{e(rel)}</a>')
        body.append("</p></section>")
    body.append("</main>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Unlearning report: {e(Path(results_dir).name)}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    return out_path
