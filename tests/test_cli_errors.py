"""Bad input at the command line: one ``error:`` line on stderr, the right exit code, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests import test_cli as base
from uniflow.cli import cli

# Shared helpers and fixtures (pytest finds fixtures by module attribute).
MODEL = base.MODEL
make_repo = base.make_repo
write_blob = base.write_blob
_cli_env = base._cli_env
models_repo = base.models_repo
populated_template = base.populated_template
repo = base.repo


def fails(*args: str, code: int, match: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    if match is not None:
        assert match in lines[0], lines[0]
    assert result.stdout == "", "errors go to stderr only"
    return result


@pytest.mark.parametrize(
    "args, code, match",
    [
        (["models", "list", "nope"], 3, "model 'nope' not found"),
        (["models", "show", "nope"], 3, "not found"),
        (["models", "history", "nope"], 3, "not found"),
        (["models", "show", MODEL, "v9.9.9"], 3, "has no version 'v9.9.9'"),
        (["models", "promote", MODEL, "v9.9.9", "--to", "staging"], 3, "has no version"),
        (["models", "archive", MODEL, "v9.9.9"], 3, "has no version"),
        (["models", "compare", MODEL, "v1.0.0", "v9.9.9"], 3, "has no version"),
        (["models", "export", MODEL, "v9.9.9", "/tmp/never-used-dest"], 3, "has no version"),
        (
            ["models", "show", "fraud-detector", "--stage", "production"],
            3,
            "no version in stage 'production'",
        ),
        (["models", "show", MODEL, "not-a-version"], 2, "invalid version"),
        (["models", "promote", MODEL, "v1.0.0", "--to", "prod"], 2, "unknown stage 'prod'"),
        (["models", "list", MODEL, "--stage", "nowhere"], 2, "unknown stage"),
        (["models", "rollback", MODEL, "--stage", "bogus"], 2, "unknown stage"),
        (["models", "rollback", MODEL, "--stage", "production"], 2, "no earlier production version"),
        (["models", "rollback", MODEL, "--stage", "development"], 2, "cannot roll back"),
        (["models", "list", "Bad/Name"], 2, "invalid model name"),
        (["models", "show", "../etc"], 2, "invalid model name"),
        (["models", "list", "--stage", "production"], 2, "needs a model NAME"),
        (["models", "compare", MODEL, "v1.0.0"], 2, "at least two versions"),
        (["models", "show", MODEL, "v1.0.0", "--stage", "staging"], 2, "either VERSION or --stage"),
        (
            ["models", "export", MODEL, "v1.0.0", "--stage", "staging", "/tmp/x"],
            2,
            "either VERSION or --stage",
        ),
        (["models", "export", MODEL, "a", "b", "c"], 2, "usage: uniflow models export"),
        (["gc", "--grace", "soon"], 2, "invalid duration 'soon'"),
        (["gc", "--grace", "-5"], 2, "invalid duration"),
        (["verify", "nope"], 3, "not found"),
    ],
)
def test_bad_input(models_repo: Path, args: list[str], code: int, match: str) -> None:
    fails(*args, code=code, match=match)


@pytest.mark.parametrize(
    "extra, code, match",
    [
        (["--name", "Bad Name"], 2, "invalid model name"),
        (["--name", "ok", "--version", "1.0"], 2, "invalid version"),
        (["--name", "ok", "--metric", "acc=high"], 2, "is not a finite number"),
        (["--name", "ok", "--metric", "acc=nan"], 2, "is not a finite number"),
        (["--name", "ok", "--metric", "acc"], 2, "expected KEY=VALUE"),
        (["--name", "ok", "--tag", "=x"], 2, "expected KEY=VALUE"),
        (["--name", "ok", "--param", "novalue"], 2, "expected KEY=VALUE"),
    ],
)
def test_bad_register_options(repo: Path, tmp_path: Path, extra: list[str], code: int, match: str) -> None:
    f = write_blob(tmp_path / "w.bin", 100, 1)
    fails("models", "register", str(f), *extra, code=code, match=match)


def test_register_missing_path(repo: Path, tmp_path: Path) -> None:
    fails(
        "models",
        "register",
        str(tmp_path / "missing.bin"),
        "--name",
        "m",
        code=2,
        match="no such file or directory",
    )


def test_register_existing_version_with_other_bytes(models_repo: Path, tmp_path: Path) -> None:
    f = write_blob(tmp_path / "other.bin", 100, 42)
    fails(
        "models", "register", str(f), "--name", MODEL, "--version", "v1.0.0", code=4, match="already exists"
    )


def test_broken_config(models_repo: Path) -> None:
    (models_repo / ".uniflow" / "config.toml").write_text("this is = not [valid toml\n")
    fails("models", "promote", MODEL, "v1.1.0", "--to", "production", code=8, match="not valid TOML")


READ_COMMANDS = [
    ["models", "list"],
    ["models", "list", MODEL],
    ["models", "show", MODEL],
    ["models", "history", MODEL],
    ["models", "compare", MODEL, "v1.0.0", "v1.1.0"],
    ["verify"],
    ["gc"],
]
WRITE_COMMANDS = [
    ["models", "promote", MODEL, "v1.0.0", "--to", "production"],
    ["models", "archive", MODEL, "v1.0.0"],
    ["models", "rollback", MODEL, "--stage", "production"],
    ["models", "export", MODEL, "out"],
]


@pytest.mark.parametrize("args", READ_COMMANDS + WRITE_COMMANDS, ids=lambda a: " ".join(a))
def test_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    nowhere = tmp_path / "not-a-repo"
    nowhere.mkdir()
    monkeypatch.chdir(nowhere)
    fails(*args, code=8, match="not a git repository")
    assert not (nowhere / ".git").exists() and not (nowhere / ".uniflow").exists()
    fails(*args, "--repo", str(nowhere), code=8, match="not a git repository")


def test_register_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write_blob(tmp_path / "w.bin", 100, 1)
    monkeypatch.chdir(tmp_path)
    fails("models", "register", str(f), "--name", "m", code=8, match="not a git repository")
    assert not (tmp_path / ".git").exists()


def test_repo_option_missing_directory(tmp_path: Path) -> None:
    fails("models", "list", "--repo", str(tmp_path / "missing"), code=8, match="no such directory")
    fails("--repo", str(tmp_path / "missing"), "models", "list", code=8, match="no such directory")
    f = write_blob(tmp_path / "file.bin", 10, 1)
    fails("models", "list", "--repo", str(f), code=8, match="not a directory")


def test_repository_without_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    bare = tmp_path / "nocommit"
    bare.mkdir()
    subprocess.run(["git", "init", "-q", str(bare)], check=True)
    monkeypatch.chdir(bare)
    result = CliRunner().invoke(cli, ["models", "list", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_unexpected_error_is_one_line(models_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uniflow._registry import ModelRegistry

    def boom(self: object) -> None:
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(ModelRegistry, "list_models", boom)
    result = fails("models", "list", code=1)
    assert (
        result.stderr.strip()
        == "error: unexpected RuntimeError: something broke (run with --traceback for details)"
    )
    result = CliRunner().invoke(cli, ["--traceback", "models", "list"])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "RuntimeError: something" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: unexpected RuntimeError: something broke"


def test_os_error_is_one_line(models_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uniflow._registry import ModelRegistry

    def denied(self: object, name: str) -> None:
        raise PermissionError(13, "Permission denied", "/some/where")

    monkeypatch.setattr(ModelRegistry, "history", denied)
    result = fails("models", "history", MODEL, code=1)
    assert result.stderr.strip() == (
        "error: Permission denied: '/some/where' (run with --traceback for details)"
    )


def test_uniflow_error_with_traceback_flag(models_repo: Path) -> None:
    result = CliRunner().invoke(cli, ["--traceback", "models", "show", "nope"])
    assert result.exit_code == 3
    assert "Traceback" in result.stderr and "ModelNotFoundError" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: model 'nope' not found in this registry"


def test_keyboard_interrupt(models_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uniflow._registry import ModelRegistry

    def interrupted(self: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelRegistry, "list_models", interrupted)
    result = fails("models", "list", code=130)
    assert result.stderr.strip() == "error: interrupted"


def test_click_usage_errors_exit_2(models_repo: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "promote", MODEL, "v1.0.0"])
    assert result.exit_code == 2 and "Missing option '--to'" in result.stderr
    result = CliRunner().invoke(cli, ["models", "frobnicate"])
    assert result.exit_code == 2 and "No such command" in result.stderr
    assert "Traceback" not in result.output


def test_error_raised_while_handling_another(models_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean-up failure must not hide the real problem (e.g. a read-only store)."""
    from uniflow._registry import ModelRegistry

    def masked(self: object) -> None:
        try:
            raise PermissionError(13, "Permission denied", "/store/objects/ab")
        except PermissionError:
            raise BufferError("cannot close exported pointers exist")  # noqa: B904 - the masking under test

    def translated(self: object) -> None:
        try:
            raise FileNotFoundError(2, "No such file or directory", "/x")
        except FileNotFoundError as exc:
            raise RuntimeError("deliberately translated") from exc

    monkeypatch.setattr(ModelRegistry, "list_models", masked)
    result = fails("models", "list", code=1)
    assert result.stderr.startswith("error: Permission denied: '/store/objects/ab'")
    monkeypatch.setattr(ModelRegistry, "list_models", translated)
    result = fails("models", "list", code=1)
    assert result.stderr.startswith("error: unexpected RuntimeError: deliberately translated")
