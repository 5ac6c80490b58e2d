"""Commands that edit ``.uniflow/config.toml`` keep what the user wrote there.

The file is committed and reviewed: its comments explain promotion rules and remotes, and its
order is the team's. ``uniflow remote add/remove`` and an import that declares stages change
only the keys they own.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.helpers import cli, make_repo, write_config

HAND_WRITTEN = """\
# Our registry. Ask #ml-platform before changing the rules below.

[stages]
# canary serves 5 % of traffic; only one version at a time
canary = { single = true }

[[promote]]
model = "clf"
to = "production"
when = "accuracy >= 0.9"  # agreed with QA on 2026-10-01

[remotes.team]
# the shared bucket; credentials come from the environment
url = "s3://team-models/registry"
"""


def _config(repo: Path) -> str:
    return (repo / ".uniflow" / "config.toml").read_text()


def test_remote_add_and_remove_keep_comments_and_order(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    write_config(repo, HAND_WRITTEN)
    backup = tmp_path / "blobs"
    cli(repo, "remote", "add", "backup", str(backup))
    text = _config(repo)
    for line in HAND_WRITTEN.splitlines():
        assert line in text, f"lost: {line!r}"
    raw = tomllib.loads(text)
    assert raw["remotes"]["backup"]["url"] == str(backup)
    assert raw["remotes"]["team"]["url"] == "s3://team-models/registry"
    assert raw["promote"][0]["when"] == "accuracy >= 0.9"

    cli(repo, "remote", "remove", "backup")
    assert _config(repo).strip() == HAND_WRITTEN.strip()
    listed = cli(repo, "remote", "list", "--json").stdout
    assert "team" in listed and "backup" not in listed


def test_remote_add_force_replaces_only_that_remote(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    write_config(repo, HAND_WRITTEN)
    other = tmp_path / "other"
    cli(repo, "remote", "add", "team", str(other), code=2)  # exists: refused, file untouched
    assert _config(repo) == HAND_WRITTEN
    cli(repo, "remote", "add", "team", str(other), "--force")
    text = _config(repo)
    assert "# Our registry. Ask #ml-platform before changing the rules below." in text
    assert 'when = "accuracy >= 0.9"  # agreed with QA on 2026-10-01' in text
    assert tomllib.loads(text)["remotes"]["team"] == {"url": str(other)}


def test_removing_the_last_remote_keeps_the_rest(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    write_config(repo, HAND_WRITTEN)
    cli(repo, "remote", "remove", "team")
    text = _config(repo)
    assert "remotes" not in tomllib.loads(text)
    assert "# canary serves 5 % of traffic; only one version at a time" in text
    assert tomllib.loads(text)["stages"] == {"canary": {"single": True}}


def test_a_fresh_config_gets_the_header_and_the_remote(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    cli(repo, "remote", "add", "origin", str(tmp_path / "blobs"))
    text = _config(repo)
    assert text.startswith("# uniflow configuration (commit this file).")
    assert tomllib.loads(text) == {"remotes": {"origin": {"url": str(tmp_path / "blobs")}}}
