"""The documentation stays true: the settings table is what the Settings declarations
print, every relative link points at a file, and the README stays a door."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from predictions.settings import Settings, markdown_table

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _settings_table() -> str:
    """The table of docs/operations.md's Settings section, as written."""
    section = (ROOT / "docs" / "operations.md").read_text().split("## Settings", 1)[1]
    section = section.split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_the_settings_table_is_what_the_declarations_print() -> None:
    # Name, default and sentence of every setting, in order, come from predictions/settings.py.
    assert _settings_table() == markdown_table(), (
        "docs/operations.md's settings table is out of date: paste the output of "
        "`python -m predictions.settings --markdown` over it"
    )


def test_the_printed_table_has_one_row_per_settings_field() -> None:
    names = re.findall(r"^\| `([A-Z0-9_]+)` \|", markdown_table(), re.M)
    assert names == [field.name.upper() for field in dataclasses.fields(Settings)]
    assert "| `REDIS_SENTINELS` | unset |" in markdown_table()
    assert "| `NEAR_CACHE_FOLLOWS_WRITES` | `1` |" in markdown_table()
    assert "| `PAIRS` | `ETH-EUR,BTC-EUR,ETH-USD,BTC-USD` |" in markdown_table()


def test_the_module_prints_the_table() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "predictions.settings", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert printed == markdown_table() + "\n"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_point_at_files(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_readme_is_a_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    for page in ("docs/api.md", "docs/models.md", "docs/operations.md", "docs/tools.md"):
        assert f"]({page}" in readme, page
