"""The docs' estimator tables are the registry's output (regenerate them with
``quasigrad estimators --markdown``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quasigrad import registry
from quasigrad.cli import main

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- registry-table:[^\n]*-->\n(.*?)\n<!-- /registry-table -->", re.S)
DOCS = sorted(p for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")] if BLOCK.search(p.read_text()))


def test_some_page_carries_the_table():
    assert DOCS, "no page carries a generated registry table"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_table_equals_registry(page):
    for block in BLOCK.findall(page.read_text()):
        assert block == registry.markdown_table(), (
            f"{page.name}: the estimator table differs from the registry; regenerate it with "
            f"`quasigrad estimators --markdown`")


def test_every_entry_and_alias_is_in_the_table():
    table = registry.markdown_table()
    for info in registry.entries():
        assert f"| `{info.name}` |" in table
        for alias in info.aliases:
            assert f"`{alias}`" in table


def test_cli_prints_the_markdown_table(capsys):
    assert main(["estimators", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == registry.markdown_table()
