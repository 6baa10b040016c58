"""The documentation stays true: the settings table is the Settings fields, every
relative link points at a file, and the README stays a door."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from predictions.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _settings_table() -> list[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z0-9_]+)` \|", section, re.M)


def test_the_settings_table_lists_every_settings_field_once_in_order() -> None:
    fields = [field.name.upper() for field in dataclasses.fields(Settings)]
    table = [name for name in _settings_table() if name != "PROMETHEUS_MULTIPROC_DIR"]
    # PROMETHEUS_MULTIPROC_DIR is prometheus-client's own variable, documented beside ours.
    assert table == fields


def test_a_setting_missing_from_the_table_is_noticed() -> None:
    assert "REDIS_URL" in _settings_table() and "NOT_A_SETTING" not in _settings_table()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_point_at_files(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_readme_is_a_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    for page in ("docs/api.md", "docs/models.md", "docs/operations.md", "docs/tools.md"):
        assert f"]({page}" in readme, page
