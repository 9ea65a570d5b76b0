"""The report renderer (sections → Markdown / HTML) and the paper's constants table."""

import base64

import numpy as np
import pandas as pd
import pytest

from transfer_tf.analysis import paper, render
from transfer_tf.analysis.render import Bullet, Section


def test_markdown_table_formats_floats_missing_values_and_pipes():
    frame = pd.DataFrame({"name": ["a|b", "c"], "value": [0.123456, np.nan], "n": [3, 4]})
    assert render.markdown_table(frame) == (
        "| name | value | n |\n|---|---|---|\n| a/b | 0.1235 | 3 |\n| c |  | 4 |\n"
    )
    assert render.markdown_table(pd.DataFrame()) == "_(none)_\n"
    assert render.markdown_table(None) == "_(none)_\n"


def _sections(png_path):
    return [
        Section("Findings", bullets=(Bullet("r = 0.5 <CI>", "A & B", "holds", "holds"),)),
        Section("Numbers", "Some text.", table=pd.DataFrame({"x": [1.5]})),
        Section("Empty", table=pd.DataFrame()),
        Section("Figures", figures=(("fig1", str(png_path)),)),
        Section("Notes", bullets=(Bullet("one note"),)),
    ]


def test_markdown_lists_sections_in_order_with_relative_figure_links(tmp_path):
    png = tmp_path / "figures" / "fig1.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG fake")
    text = render.to_markdown("Title", _sections(png), str(tmp_path))
    assert text == (
        "# Title\n\n"
        "## Findings\n\n- **A & B** — holds. r = 0.5 <CI>\n\n"
        "## Numbers\n\nSome text.\n\n| x |\n|---|\n| 1.5 |\n\n\n"
        "## Empty\n\n_(none)_\n\n\n"
        "## Figures\n\n### fig1\n\n![fig1](figures/fig1.png)\n\n"
        "## Notes\n\n- one note\n\n"
    )


def test_html_escapes_text_and_embeds_figures(tmp_path):
    png = tmp_path / "fig1.png"
    png.write_bytes(b"\x89PNG fake")
    page = render.to_html("A <b> title", _sections(png))
    assert "<title>A &lt;b&gt; title</title>" in page and "<h1>A &lt;b&gt; title</h1>" in page
    assert (
        "<li><b>A &amp; B</b> — <span class='holds'>holds</span>. r = 0.5 &lt;CI&gt;</li>" in page
    )
    assert "<p>Some text.</p>" in page and "<td>1.5</td>" in page
    assert "<h2>Empty</h2>\n<p><i>(none)</i></p>" in page
    encoded = base64.b64encode(b"\x89PNG fake").decode()
    assert f"<img alt='fig1' src='data:image/png;base64,{encoded}'>" in page
    assert page.count("<h2>") == 5 and page.endswith("</body></html>")


def test_every_paper_constant_says_where_the_paper_states_it():
    for key, number in paper.PAPER.items():
        assert number.quote and ("Sec." in number.where or "Fig." in number.where), key
    assert paper.PAPER["finetune_beats_logreg"].fraction == pytest.approx(179 / 192)
    assert paper.PAPER["finetune_significant_datasets"].value == (11, 12)
    assert (paper.PAPER["r_logreg"].value, paper.PAPER["r_finetune"].value) == (0.99, 0.96)
    table = paper.paper_table()
    assert list(table.columns) == ["key", "paper", "where"] and len(table) == len(paper.PAPER)
