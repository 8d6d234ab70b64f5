"""Small HTML builders for the report: escaped text, tables, sections, one stylesheet.

Everything is escaped here, so a caption holding "<script>" shows as text. No JavaScript:
the page must render identically with scripts off and in a headless browser.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots img { margin: 0.3em; border: 1px solid #eee; }
.example { display: flex; gap: 1em; border: 1px solid #ddd; padding: 0.8em; margin: 1em 0; }
.example img { max-width: 320px; height: auto; align-self: flex-start; }
.example .text { flex: 1; min-width: 0; }
.caption { white-space: pre-wrap; margin: 0.2em 0 0.6em; }
.consistent { color: #1a7f37; } .inconsistent { color: #c62828; }
.unverifiable, .unparsed { color: #8a6d00; }
.flag { background: #fff3cd; padding: 0 0.3em; margin-right: 0.3em; }
.note { background: #eef5ff; padding: 0.4em 0.8em; }
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def number(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return esc("-" if value is None else value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return esc(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, int | float) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{number(cell)}</td>')
            else:
                cells.append(f"<td>{esc(cell)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    if not body:
        return "<p>none</p>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'


def image(src: str, alt: str) -> str:
    return f'<img src="{esc(src)}" alt="{esc(alt)}">'


def page(title: str, body: Iterable[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{esc(title)}</h1>{''.join(body)}</body></html>\n"
    )
