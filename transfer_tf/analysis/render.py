"""One renderer: a list of `Section`s → report.md (figures linked) and report.html (figures
embedded as base64, so the page is one self-contained file)."""

from __future__ import annotations

import base64
import dataclasses
import html
import os

import numpy as np
import pandas as pd

CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
    "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}.holds{color:green}"
    ".fails{color:#b00}.unknown{color:#666}img{max-width:100%}"
)


@dataclasses.dataclass(frozen=True)
class Bullet:
    """A list item: **lead** — status. text (`status_class` colours the status in HTML)."""

    text: str
    lead: str = ""
    status: str = ""
    status_class: str = ""


@dataclasses.dataclass(frozen=True)
class Section:
    """A titled part of the report: text, then bullets, then a table, then figures."""

    title: str
    text: str = ""
    bullets: tuple[Bullet, ...] = ()
    table: pd.DataFrame | None = None
    figures: tuple[tuple[str, str], ...] = ()  # (name, PNG path)


def markdown_table(frame: pd.DataFrame | None, floatfmt: str = ".4g") -> str:
    """A pipe table (pandas' to_markdown needs the unpinned `tabulate`)."""
    if frame is None or frame.empty:
        return "_(none)_\n"

    def cell(v):
        if isinstance(v, float | np.floating):
            return "" if not np.isfinite(v) else format(v, floatfmt)
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"


def _md_bullet(b: Bullet) -> str:
    head = f"**{b.lead}** — " if b.lead else ""
    status = f"{b.status}. " if b.status else ""
    return f"- {head}{status}{b.text}"


def to_markdown(title: str, sections: list[Section], base_dir: str) -> str:
    """The report as Markdown; figure links are relative to `base_dir` (where the file goes)."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.bullets:
            lines += [_md_bullet(b) for b in section.bullets] + [""]
        if section.table is not None:
            lines += [markdown_table(section.table), ""]
        for name, path in section.figures:
            lines += [f"### {name}", "", f"![{name}]({os.path.relpath(path, base_dir)})", ""]
    return "\n".join(lines) + "\n"


def _html_bullet(b: Bullet) -> str:
    esc = html.escape
    head = f"<b>{esc(b.lead)}</b> — " if b.lead else ""
    status = f"<span class='{b.status_class}'>{esc(b.status)}</span>. " if b.status else ""
    return f"<li>{head}{status}{esc(b.text)}</li>"


def _embedded_png(name: str, path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    esc = html.escape
    return f"<h3>{esc(name)}</h3><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"


def to_html(title: str, sections: list[Section]) -> str:
    """The report as one HTML page with every figure embedded."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{esc(section.text)}</p>")
        if section.bullets:
            parts.append("<ul>" + "".join(_html_bullet(b) for b in section.bullets) + "</ul>")
        if section.table is not None and len(section.table):
            parts.append(
                section.table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")
            )
        elif section.table is not None:
            parts.append("<p><i>(none)</i></p>")
        parts += [_embedded_png(name, path) for name, path in section.figures]
    parts.append("</body></html>")
    return "\n".join(parts)


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
