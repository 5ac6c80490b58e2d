"""Strings that come from Git or a remote (tags, descriptions, metric keys, actors) never reach
the terminal as control characters: an escape sequence in a tag is printed, not obeyed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli

EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b"


@pytest.mark.parametrize("tty", ["0", "1"])
def test_control_characters_from_the_registry_are_neutralised(repo: Path, tty: str) -> None:
    from uniflow import ModelRegistry

    f = repo / "w.bin"
    f.write_bytes(b"x" * 1000)
    ModelRegistry(repo).register(
        str(f), name="m", tags={"note": EVIL}, description=f"about {EVIL}", params={"p": EVIL}
    )
    env = {"UNIFLOW_FORCE_TTY": tty}
    for args in (
        ("models", "show", "m"),
        ("models", "list", "m"),
        ("models", "list"),
        ("models", "history", "m"),
    ):
        out = cli(repo, *args, env=env).stdout
        assert "\x1b]" not in out and "\x07" not in out and "\x9b" not in out, (args, out)
        assert "\x1b[2J" not in out, (args, out)
    shown = cli(repo, "models", "show", "m", env={"UNIFLOW_FORCE_TTY": "0"}).stdout
    assert "\\x1b]0;pwned" in shown  # visible, so the reader sees something odd is there
