"""Every published figure is tied to its evidence: the numbers in README.md's results table, in
docs/benchmarks.md, docs/course.md and docs/algorithms.md must each equal, at the precision shown, a value
in the JSON files that the section names (`<!-- figures: a.json b.json -->` ... `<!-- end figures -->`,
files in benchmarks/results/).

A figure is a number with a unit (%, x, ×, s, ms, points, B, bytes, M, GMAC/s) or a decimal point, and
in a table also a number with a thousands separator; code spans, link targets and a table's first (label)
column are not read. Counts written as integers ("20 epochs", "5,000 digits") and settings in code spans
(`rho: 0.01`) are protocol, not figures. A JSON value v matches a shown number if it rounds to it as v, as
100 v (a fraction shown in percent or points), or as v / 1e6 (millions); signs are compared on
magnitudes, since a loss is shown as a negative difference. A list of numbers also offers its mean and
sample standard deviation (a table's "mean (std)" row).
"""
from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCS = [REPO / "README.md", REPO / "docs" / "benchmarks.md", REPO / "docs" / "course.md",
        REPO / "docs" / "algorithms.md"]
SECTION = re.compile(r"<!-- figures: ([^>]*?) -->(.*?)<!-- end figures -->", re.S)
UNIT = r"(?:%|x\b|×|\s?ms\b|\s?s\b|\s(?:points|pts)\b|\s?B\b|\sbytes\b|M\b|\sGMAC/s)"
NUMBER = re.compile(r"(?<![\w.\-−])([−\-+]?)(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?(?:e[−\-]?\d+)?)(?!\.?\d)("
                    + UNIT + r")?")


def leaves(x) -> list[float]:
    if isinstance(x, bool):
        return []
    if isinstance(x, (int, float)):
        return [float(x)]
    if isinstance(x, dict):
        return [v for value in x.values() for v in leaves(value)]
    if isinstance(x, list):
        values = [v for value in x for v in leaves(value)]
        numbers = [float(v) for v in x if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) >= 2:
            values += [statistics.mean(numbers), statistics.stdev(numbers)]
        return values
    return []


def readable(text: str) -> list[tuple[bool, str]]:
    """(is a table row, text whose numbers are read) per line: no code spans, link targets, comments, table
    header rules or table label columns."""
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    lines = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            if set("".join(cells)) <= set("- :"):
                continue
            lines.append((True, "|".join(cells[1:])))
        else:
            lines.append((False, line))
    return lines


def figures(text: str) -> list[tuple[str, float, int]]:
    """(as shown, magnitude, decimals) of each figure in `text`."""
    found = []
    for table, line in readable(text):
        for match in NUMBER.finditer(line):
            sign, digits, unit = match.groups()
            if not unit and "." not in digits and not (table and "," in digits):
                continue  # a count or setting
            plain = digits.replace(",", "").replace("−", "-")
            decimals = len(plain.split(".")[1].split("e")[0]) if "." in plain else 0
            found.append((match.group(0).strip(), abs(float(plain)), decimals))
    return found


def matches(shown: float, decimals: int, values: list[float]) -> bool:
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    return any(math.isclose(abs(v) * scale, shown, abs_tol=tolerance) for v in values for scale in (1, 100, 1e-6))


def sections() -> list[tuple[str, str, list[str]]]:
    out = []
    for doc in DOCS:
        for files, body in SECTION.findall(doc.read_text()):
            out.append((doc.relative_to(REPO).as_posix(), body, files.split()))
    return out


def test_every_results_section_names_existing_json():
    found = sections()
    assert {doc for doc, _, _ in found} == {"README.md", "docs/benchmarks.md", "docs/course.md", "docs/algorithms.md"}
    for doc, body, files in found:
        assert files, f"{doc}: a figures section names no JSON"
        for name in files:
            assert (RESULTS / name).is_file(), f"{doc} cites benchmarks/results/{name}, which does not exist"


def test_benchmarks_doc_publishes_no_figure_outside_a_section():
    text = DOCS[1].read_text().split("\n## References")[0]  # paper titles and arXiv numbers are not figures
    outside = "\n".join(line for line in SECTION.sub(" ", text).splitlines() if not line.startswith("#"))
    assert figures(outside) == [], "docs/benchmarks.md: figures outside a <!-- figures: ... --> section"


@pytest.mark.parametrize("doc,body,files", sections(), ids=lambda v: v if isinstance(v, str) else None)
def test_each_figure_equals_a_value_of_its_json(doc, body, files):
    values = [v for name in files for v in leaves(json.loads((RESULTS / name).read_text()))]
    missing = [shown for shown, magnitude, decimals in figures(body) if not matches(magnitude, decimals, values)]
    assert not missing, f"{doc}: figures not found in {files}: {missing}"


def test_the_check_catches_an_edited_figure():
    body = "| what | ours |\n| --- | --- |\n| ADMM | 97.48% and 225x, 0.065 s |\n"
    values = [0.97483, 225.039, 0.0651]
    assert all(matches(m, d, values) for _, m, d in figures(body))
    edited = body.replace("97.48%", "97.58%")
    assert [s for s, m, d in figures(edited) if not matches(m, d, values)] == ["97.58%"]
    assert [s for s, _, _ in figures("seed 0, 20 epochs, 5,000 digits, `lr: 0.001`, [x](a1.5.md), torch 2.14.1")] == []
    assert [s for s, _, _ in figures("| 5,000 digits | 431,080 → 30,683 |")] == ["431,080", "30,683"]
