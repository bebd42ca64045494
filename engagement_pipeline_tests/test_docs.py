"""The documents a user finds in a clone: the contract's copy, and README links that resolve inside the repo."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_repos_contract_is_the_shared_one():
    if not SHARED_CONTRACT.exists():
        pytest.skip(f"no shared contract beside this clone ({SHARED_CONTRACT})")
    assert (ROOT / "docs" / "CONTRACT.md").read_text() == SHARED_CONTRACT.read_text(), (
        "docs/CONTRACT.md differs from ../shared/CONTRACT.md: copy the newer one over the other"
    )


def test_every_relative_link_in_the_readme_resolves_inside_the_repository():
    document = "README.md"
    path = ROOT / document
    targets = [t for t in LINK.findall(path.read_text()) if not re.match(r"[a-z]+:", t)]
    assert targets, f"{document} links to nothing: the pattern is broken"
    for target in targets:
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{document} links outside the repository: {target}"
        assert resolved.exists(), f"{document} links to a missing file: {target}"
