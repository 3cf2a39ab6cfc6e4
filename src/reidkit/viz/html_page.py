"""Self-contained HTML pages (the run report, the run comparison): inline CSS, pictures as base64 data URIs,
no script, no network access; tables whose cells keep the exact values in `data-value`."""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path
from typing import Any

from reidkit.outputs import write_text

METRIC_COLUMNS = (("rank1", "rank-1"), ("rank5", "rank-5"), ("rank10", "rank-10"), ("mAP", "mAP"), ("mINP", "mINP"))


CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem 2rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
nav a { margin-right: .8rem; } .note { color: #666; font-size: .9rem; }
table { border-collapse: collapse; margin: .5rem 0; } th, td { border: 1px solid #ccc; padding: .25rem .6rem; }
td { text-align: right; } td.name, th.name { text-align: left; } thead th { background: #f0f0f0; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; } img { max-width: 100%; }
figure { margin: .8rem 0; } figcaption { font-size: .85rem; color: #444; }
"""


def table(table_id: str, header: list[str], rows: list[tuple[str, str]]) -> str:
    """An HTML table: column titles, then rows of (name, cells HTML); the first column holds the names."""
    head = "".join(f"<th>{html.escape(title)}</th>" for title in header[1:])
    body = "".join(f"<tr data-row='{html.escape(name, quote=True)}'><td class='name'>{html.escape(name)}</td>"
                   f"{cells}</tr>" for name, cells in rows)
    return (f"<table id='{table_id}'><thead><tr><th class='name'>{html.escape(header[0])}</th>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def percent_cell(value: Any, digits: int = 2, key: str = "", title: str = "") -> str:
    """A cell with `value` in % that keeps the exact value in data-value; "—" for a missing value."""
    if not isinstance(value, (int, float)):
        return f"<td data-key='{key}'>—</td>"
    return f"<td data-key='{key}' data-value='{value!r}' title='{title}'>{100 * value:.{digits}f}</td>"


def metrics_table(rows: dict[str, dict]) -> str:
    """Rows of metrics in % (two decimals); each cell keeps the exact value in data-value."""
    return table("metrics-table", ["model"] + [f"{title} (%)" for _, title in METRIC_COLUMNS],
                  [(name, "".join(percent_cell(values.get(key), key=key) for key, _ in METRIC_COLUMNS))
                   for name, values in rows.items()])


def image_figure(path: Path, caption: str) -> str:
    """A figure with the PNG or JPEG picture at `path` as a data URI."""
    media = "image/jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "image/png"
    data = Path(path).read_bytes()
    text = html.escape(caption)
    return (f"<figure><img alt='{text}' src='data:{media};base64,{base64.b64encode(data).decode('ascii')}'>"
            f"<figcaption>{text}</figcaption></figure>")


def write_page(out: Path, title: str, summary: str, sections: list[tuple[str, str, str]], notes: list[str]) -> Path:
    """Write the HTML page: title, summary, notes, links to the sections, then the sections."""
    written = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href='#{key}'>{html.escape(name)}</a>" for key, name, _ in sections)
    body = "".join(f"<section id='{key}'><h2>{html.escape(name)}</h2>{content}</section>"
                   for key, name, content in sections)
    remarks = "".join(f"<p class='note'>{html.escape(note)}</p>" for note in notes)
    return write_text(out, f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
                           f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>"
                           f"<p class='note'>written {written}</p>{remarks}<nav>{nav}</nav>{body}</body></html>\n")
