"""The report page: a few HTML helpers and the page frame.

Plain string assembly with :func:`html.escape` on every piece of text: the page is
static, needs no script, loads nothing from the network, and its styles are inline, so
it opens from a file anywhere (a templating engine would add a dependency for a page
this simple).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:0 16px 48px;
color:#222;background:#fafafa}
h1{font-size:1.5em;margin:20px 0 4px}h2{font-size:1.2em;margin-top:34px;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:18px 0 6px}h4{font-size:.95em;margin:14px 0 4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
td,th{border:1px solid #d0d0d0;padding:3px 8px}th{background:#eee}td.num{text-align:right}
figure{margin:8px 0 18px}figcaption{font-size:12px;color:#555;max-width:900px}
img{max-width:100%;height:auto;image-rendering:auto;background:#fff}
.note{background:#fff6d6;border:1px solid #e8d48a;padding:6px 10px;font-size:13px;margin:6px 0}
.meta{font-size:13px;color:#444}.charts{display:flex;flex-wrap:wrap;gap:12px}
code{font-size:12px}nav a{margin-right:12px;font-size:13px}
.legend{font-size:13px}.legend span{display:inline-block;padding:0 6px;margin-right:8px;color:#fff;font-size:12px}
"""


def text(value: Any) -> str:
    """Escaped text."""
    return escape(str(value))


def note(message: str) -> str:
    """A highlighted remark (something missing or skipped)."""
    return f'<p class="note">{text(message)}</p>'


def paragraph(message: str, cls: str = "") -> str:
    """A paragraph of text."""
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{text(message)}</p>"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 0) -> str:
    """A table; cells from column ``numeric_from`` on are right-aligned (when > 0)."""
    head = "".join(f"<th>{text(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if numeric_from and i >= numeric_from else ""
            cells.append(f"<td{cls}>{text(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(src: str, caption: str, alt: str, width: int | None = None, height: int | None = None) -> str:
    """An image file (path relative to the page) with a caption."""
    size = f' width="{width}" height="{height}"' if width and height else ""
    return (f'<figure><img src="{escape(src, quote=True)}" alt="{text(alt)}"{size}>'
            f"<figcaption>{text(caption)}</figcaption></figure>")


def section(anchor: str, title: str, body: Sequence[str]) -> str:
    """A titled section with an anchor for the navigation bar."""
    return f'<section id="{escape(anchor, quote=True)}"><h2>{text(title)}</h2>\n' + "\n".join(body) + "</section>"


def page(title: str, header: Sequence[str], sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document.

    Args:
        title: page title.
        header: markup under the title (run description).
        sections: ``(anchor, title, markup)`` of each section, in order.
    """
    nav = "".join(f'<a href="#{escape(a, quote=True)}">{text(t)}</a>' for a, t, _ in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{text(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{text(title)}</h1>",
        *header,
        f"<nav>{nav}</nav>",
        *(body for _, _, body in sections),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
