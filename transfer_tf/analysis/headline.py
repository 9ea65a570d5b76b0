"""The headline numbers of a study's report as printed lines.

`report.write_report` writes `headline.json`; transfer-analyze and transfer-study print it with
`headline_lines`. This module imports nothing heavy (no pandas, matplotlib or TensorFlow), so a
resumed study that has nothing left to run prints its headline in a fraction of a second.
"""

from __future__ import annotations


def headline_lines(headline: dict) -> list[str]:
    """The headline numbers as printed lines (transfer-analyze and transfer-study print them)."""
    lines = [f"report: {headline['report_html']}", f"        {headline['report_md']}"]
    for key, fit in headline["correlations"].items():
        lines.append(
            f"r[{key}] = {fit['r']:.3f} (95% CI {fit['r_ci'][0]:.3f} to "
            f"{fit['r_ci'][1]:.3f}, p = {fit['p']:.3g}, {fit['n_models']} models)"
        )
    for key, counts in headline["win_counts"].items():
        lines.append(f"{key}: {counts['wins']} of {counts['total']}")
    for finding in headline["findings"]:
        lines.append(f"[{finding['verdict']}] {finding['finding']}")
    for name, why in headline["skipped"].items():
        lines.append(f"skipped {name}: {why}")
    return lines
