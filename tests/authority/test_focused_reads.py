"""A read that verifies signatures judges the version it serves, and only that
(``verify_lifecycle(..., focus=VERSION)``, docs/governance.md, "Consumers").

The events of other versions are still read, verified and replayed (the head state, the
stage order and a rollback depend on them), but another version's tag and its events are
not judged: nothing a read serves depends on them. Those verdicts are kept apart from full
ones, so a full verification later still judges every version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from uniflow import ModelRegistry, PolicyError
from uniflow._ops.authority import verify_lifecycle
from uniflow._records.signedchain import TAG_KIND

from .conftest import Key, git
from .test_consume import MODEL, cache_dir, forge, served
from .test_signed_lifecycle import MALLORY, keys

__all__ = ["cache_dir", "keys", "served"]  # the fixtures, shared with test_consume


def _tag(bare: Path, version: str) -> str:
    return git(bare, "rev-parse", f"refs/tags/models/{MODEL}/{version}").stdout.decode().strip()


def test_a_read_checks_the_tag_of_the_version_it_serves_and_no_other(served: dict[str, Any]) -> None:
    with ModelRegistry(served["url"], signatures="require") as reg:
        assert reg.get(MODEL, stage="production").version == served["v1"]
        cache = reg.repository.lifecycle.cache
        assert cache is not None
        # v2's tag was never read nor verified: only v1's verdict is kept
        assert cache.keys(TAG_KIND) == {_tag(served["bare"], served["v1"])}


def test_a_forged_event_of_another_version_does_not_block_the_holder_but_a_full_check_finds_it(
    served: dict[str, Any], keys: dict[str, Key]
) -> None:
    forged = forge(served["bare"], served["v2"], "staging", key=keys[MALLORY])  # an unknown key
    with ModelRegistry(served["url"], signatures="require") as reg:
        assert reg.get(MODEL, stage="production").version == served["v1"]
        # the read's focused verdicts are kept, but never stand in for a full verification
        full = verify_lifecycle(reg.repository, MODEL)
    failing = [e for e in full.events if not e.ok]
    assert [e.commit for e in failing] == [forged]
    assert "signed, but" in failing[0].reason
    assert all(t.reason != f"not checked (a read of {served['v1']})" for t in full.tags.values())


def test_a_forged_event_of_the_version_served_is_still_refused(
    served: dict[str, Any], keys: dict[str, Key]
) -> None:
    forge(served["bare"], served["v2"], "production", key=keys[MALLORY])
    with (
        ModelRegistry(served["url"], signatures="require") as reg,
        pytest.raises(PolicyError, match="move to production is not signed by an allowed signer"),
    ):
        reg.get(MODEL, stage="production")
