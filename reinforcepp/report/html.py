"""The small HTML template shared by the run page and the comparison page: one CSS, sections, figures, tables,
number formatting, and the Markdown twin of a table. Every piece of text from a run goes through
``html.escape``: configs and titles are user data."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

CSS = """
body { background: #fff; color: #1f2328; margin: 0;
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: #57606a; margin: 0 0 4px; }
.meta code { font-size: 13px; }
.note { color: #57606a; font-style: italic; margin: 6px 0; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
figure { margin: 0; }
figure img { width: 100%; height: auto; display: block; border: 1px solid #eaeef2; border-radius: 4px; }
figure.wide { grid-column: 1 / -1; }
figcaption { color: #57606a; font-size: 13px; margin-top: 4px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
th, td { padding: 4px 12px; border-bottom: 1px solid #eaeef2; text-align: left; }
th { background: #f6f8fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.pos { color: #1a7f37; } .neg { color: #cf222e; }
pre { background: #f6f8fa; border: 1px solid #eaeef2; border-radius: 4px; padding: 12px; overflow-x: auto;
  font-size: 12.5px; line-height: 1.4; }
ul.notes { margin: 6px 0; padding-left: 20px; }
td.text { white-space: pre-wrap; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
details { margin: 6px 0; } summary { cursor: pointer; color: #57606a; }
"""

NOT_MEASURED = "not measured in these runs"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, header_html: str, sections: list[str]) -> str:
    """A complete, self-contained HTML document: inline CSS, images embedded (one file to mail or attach)."""
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{esc(title)}</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{esc(title)}</h1>\n{header_html}\n{body}\n"
        "</main>\n</body>\n</html>\n"
    )


def section(heading: str, *parts: str) -> str:
    return f"<section>\n<h2>{esc(heading)}</h2>\n" + "\n".join(p for p in parts if p) + "\n</section>"


def subheading(text: str) -> str:
    return f"<h3>{esc(text)}</h3>"


def note(text: str) -> str:
    return f"<p class=\"note\">{esc(text)}</p>"


def meta_line(label: str, value: str, *, code: bool = False) -> str:
    shown = f"<code>{esc(value)}</code>" if code else esc(value)
    return f"<p class=\"meta\"><strong>{esc(label)}:</strong> {shown}</p>"


def bullet_list(items: list[str]) -> str:
    return "<ul class=\"notes\">" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def slug(text: str) -> str:
    """A string fit for a file name (group keys and labels are free text)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text) or "_"


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def figure(png: Path, alt: str, caption: str = "", *, wide: bool = False) -> str:
    """An <img> holding the PNG itself (a data: URI), so that the page needs no other file."""
    src = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
    cls = " class=\"wide\"" if wide else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure{cls}><img src=\"{esc(src)}\" alt=\"{esc(alt)}\" loading=\"lazy\">{cap}</figure>"


def grid(figures: list[str]) -> str:
    """Figures two per row."""
    return "<div class=\"grid\">\n" + "\n".join(figures) + "\n</div>" if figures else ""


def _looks_numeric(cell: str) -> bool:
    text = cell.replace("pts", "").replace("x", "").replace("±", "").replace(",", "").strip()
    return bool(text) and all(c in "0123456789.+-e " for c in text) and any(c.isdigit() for c in text)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """An HTML table of already formatted cells; numeric-looking cells are right-aligned, signed changes coloured."""
    numeric_cols = [bool(rows) and all(_looks_numeric(r[i]) or r[i] == "–" for r in rows) for i in range(len(headers))]
    num_attr = " class=\"num\""
    head = "".join(f"<th{num_attr if numeric_cols[i] else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            classes = (["num"] if numeric_cols[i] else []) + _sign_class(cell)
            attr = f" class=\"{' '.join(classes)}\"" if classes else ""
            cells.append(f"<td{attr}>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _sign_class(cell: str) -> list[str]:
    # only changes in points carry a colour: a plain negative loss is not "bad"
    if cell.endswith("pts") and cell.startswith("+") and cell != "+0.0 pts":
        return ["pos"]
    if cell.endswith("pts") and cell.startswith("-"):
        return ["neg"]
    return []


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """The same table in GitHub Markdown, pipes escaped."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)])


def fmt(value: float | int | None) -> str:
    """A number for a table: 4 decimals in the usual range, scientific for tiny values (KL), '–' when absent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value)}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3e}"
    if abs(value) >= 1e4:
        return f"{value:.1f}"
    return f"{value:.4f}"


def fmt_points(delta: float) -> str:
    """A difference of two accuracies in percentage points: 0.234 -> '+23.4 pts'."""
    return f"{delta * 100:+.1f} pts"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h ({seconds:.0f} s)"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min ({seconds:.0f} s)"
    return f"{seconds:.1f} s"


def is_accuracy_metric(name: str, *values: float | None) -> bool:
    """pass@k, or a mean reward that stays in [0, 1]: differences of these read best in percentage points."""
    if "pass@" in name:
        return True
    present = [v for v in values if v is not None]
    return "reward_mean" in name and bool(present) and all(0.0 <= v <= 1.0 for v in present)


def change(name: str, before: float | None, after: float | None) -> str:
    """The change column of a before/after table: points for accuracies, a signed difference otherwise."""
    if before is None or after is None:
        return "–"
    if is_accuracy_metric(name, before, after):
        return fmt_points(after - before)
    return f"{after - before:+.4f}"


def before_after_rows(before: dict[str, float], after: dict[str, float]) -> list[list[str]]:
    """Rows metric / before / after / change, in the order of the 'after' evaluation (then before-only metrics)."""
    names = list(after) + [k for k in before if k not in after]
    return [[n, fmt(before.get(n)), fmt(after.get(n)), change(n, before.get(n), after.get(n))] for n in names]


def metric_rows(record: dict[str, float]) -> list[list[str]]:
    """Rows metric / value of one record, sorted by name (the step is shown elsewhere)."""
    return [[k, fmt(v)] for k, v in sorted(record.items()) if k != "step"]
