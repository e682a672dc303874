"""docs/configuration*.md are generated from the config classes: it must be current, and every field documented."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def generator():
    """``docs/make_configuration.py`` as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_configuration", DOCS / "make_configuration.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("page", ["configuration.md", "configuration_train_csp.md"])
def test_committed_page_is_current(generator, page):
    committed = (DOCS / page).read_text()
    message = f"docs/{page} is out of date: run python docs/make_configuration.py"
    assert committed == generator.render(page), message


def test_every_field_has_a_description(generator):
    missing = generator.undocumented()
    assert not missing, (
        "config fields without a comment (write one on the field's line or directly above it, then run "
        "python docs/make_configuration.py):\n  " + "\n  ".join(missing)
    )


def test_comments_are_read_from_the_source(generator):
    """The comment on a field's line wins; otherwise the comment lines directly above it, joined."""

    from dataclasses import dataclass

    @dataclass
    class Example:
        # first line
        # second line
        above: int = 1
        beside: int = 2  # beside it
        # not this one
        both: int = 3  # this one
        bare: int = 4

    found = {name: comment for name, (comment, _) in generator.field_comments(Example).items()}
    assert found == {"above": "first line second line", "beside": "beside it", "both": "this one", "bare": None}
