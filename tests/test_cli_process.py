"""The installed ``uniflow`` console script in a subprocess: start-up imports, plain vs terminal
output, shell completion, a read-only store, the lazy sharing commands, docs coverage."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests import test_cli as base
from uniflow.cli import cli

# Shared helpers and fixtures (pytest finds fixtures by module attribute).
GIT_ENV = base.GIT_ENV
MODEL = base.MODEL
make_repo = base.make_repo
populate = base.populate
write_blob = base.write_blob
_cli_env = base._cli_env
models_repo = base.models_repo
populated_template = base.populated_template
repo = base.repo

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "uniflow"
RELATIVE = re.compile(r"just now|\d+ (?:second|minute|hour)s? ago")
HEAVY = (
    "dulwich",
    "torch",
    "sklearn",
    "fsspec",
    "rich.console",
    "numpy",
    "uniflow._registry",
    "msgpack",
    "blake3",
)


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("UNIFLOW_", "_UNIFLOW"))}
    e.update(GIT_ENV)
    e.update(extra)
    return e


def uniflow(
    *args: str,
    cwd: Path | None = None,
    code: int = 0,
    script: bool = True,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    cmd = [str(SCRIPT)] if script and SCRIPT.exists() else [sys.executable, "-m", "uniflow"]
    r = subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        env=env(**(extra_env or {})),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    return r


def imported_modules(*args: str) -> set[str]:
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "uniflow", *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return {
        line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")
    }


# --------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["models", "--help"]])
def test_startup_imports_nothing_heavy(args: list[str]) -> None:
    mods = imported_modules(*args)
    assert ("click" in mods) == (args != ["--version"]), "--version answers before importing click"
    heavy = sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], heavy


def test_version_output() -> None:
    from uniflow import __version__

    assert uniflow("--version").stdout.strip() == f"uniflow {__version__}"
    assert uniflow("--version", script=False).stdout.strip() == f"uniflow {__version__}"


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from uniflow import __version__
    from uniflow.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"uniflow {__version__}\n"
    with pytest.raises(SystemExit) as info:
        main(["--version", "--help"])  # not the fast path: click answers
    assert info.value.code == 0
    assert capsys.readouterr().out == f"uniflow {__version__}\n"


def test_help_lists_commands() -> None:
    out = uniflow("--help").stdout
    for name in ("init", "models", "gc", "verify"):
        assert re.search(rf"^\s+{name}\s", out, re.MULTILINE), name
    out = uniflow("models", "-h").stdout
    for name in (
        "list",
        "show",
        "register",
        "promote",
        "compare",
        "history",
        "rollback",
        "archive",
        "export",
    ):
        assert re.search(rf"^\s+{name}\s", out, re.MULTILINE), name


# --------------------------------------------------------------------------- console script end to end


def test_console_script_round_trip(repo: Path, tmp_path: Path) -> None:
    f = write_blob(tmp_path / "w.bin", 2048, 5)
    uniflow("init", cwd=repo)
    out = uniflow(
        "models",
        "register",
        str(f),
        "--name",
        MODEL,
        "--version",
        "v1.0.0",
        "--metric",
        "accuracy=0.95",
        cwd=repo,
    ).stdout
    assert out.strip() == f"Registered {MODEL} v1.0.0 (development): 1 file, 2.0 KiB"
    # the seed's three commands, exactly as written
    assert "Promoted" in uniflow("models", "promote", MODEL, "v1.0.0", "--to", "production", cwd=repo).stdout
    listing = uniflow("models", "list", cwd=repo).stdout
    assert listing.splitlines()[1].split()[:4] == [MODEL, "v1.0.0", "1", "production"]
    versions = uniflow("models", "list", MODEL, cwd=repo).stdout
    assert versions.splitlines()[1].startswith("v1.0.0 (latest)")
    for text in (listing, versions):
        assert "\x1b[" not in text and not re.search("[─━│┃┏┓]", text)
    data = json.loads(uniflow("models", "show", MODEL, "--json", cwd=repo).stdout)
    assert data["stage"] == "production" and data["metrics"] == {"accuracy": 0.95}
    assert json.loads(uniflow("verify", "--json", cwd=repo).stdout)["ok"] is True
    assert json.loads(uniflow("gc", "--json", cwd=repo).stdout)["dry_run"] is True
    assert len(json.loads(uniflow("models", "history", MODEL, "--json", cwd=repo).stdout)) == 2


def test_python_dash_m(models_repo: Path) -> None:
    out = uniflow("models", "list", "--json", cwd=models_repo, script=False).stdout
    assert [m["name"] for m in json.loads(out)] == ["fraud-detector", MODEL]


@pytest.mark.parametrize(
    "args, code, match",
    [
        (["models", "show", "nope"], 3, "error: model 'nope' not found in this registry"),
        (["models", "show", MODEL, "v7.0.0"], 3, "has no version 'v7.0.0'"),
        (["models", "promote", MODEL, "v1.0.0", "--to", "heaven"], 2, "unknown stage 'heaven'"),
        (["models", "list", "UPPER"], 2, "invalid model name"),
    ],
)
def test_console_script_errors(models_repo: Path, args: list[str], code: int, match: str) -> None:
    r = uniflow(*args, cwd=models_repo, code=code)
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and match in r.stderr and r.stderr.startswith("error: ")
    assert "\x1b[" not in r.stderr, "no colour codes when stderr is not a terminal"


def test_console_script_outside_repository(tmp_path: Path) -> None:
    r = uniflow("models", "list", cwd=tmp_path, code=8)
    assert r.stderr.startswith("error: not a git repository") and r.stderr.count("\n") == 1
    assert not (tmp_path / ".git").exists()


def test_console_script_unexpected_error(models_repo: Path) -> None:
    # A corrupt lifecycle ref (points at a blob) is not a case anyone planned for.
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        input="junk",
        cwd=models_repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ref = models_repo / ".git" / "refs" / "uniflow" / "models" / MODEL
    ref.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "update-ref", f"refs/uniflow/models/{MODEL}", blob], cwd=models_repo, check=True)
    r = subprocess.run(
        [str(SCRIPT), "models", "history", MODEL],
        cwd=models_repo,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    r = subprocess.run(
        [str(SCRIPT), "--traceback", "models", "history", MODEL],
        cwd=models_repo,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr


def _as_other_user() -> list[str]:
    """Prefix that runs a command as an unprivileged user (root ignores file permissions)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make the store read-only")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_read_only_store(populated_template: Path) -> None:
    prefix = _as_other_user()
    base = Path(tempfile.mkdtemp(prefix="uniflow-cli-ro-"))  # traversable by another user
    try:
        os.chmod(base, 0o755)
        root = base / "repo"
        shutil.copytree(populated_template, root, symlinks=True)
        f = write_blob(base / "new.bin", 50_000, 77)
        home = base / "home"
        home.mkdir()
        if prefix:
            subprocess.run(["chown", "-R", "65534:65534", str(base)], check=True)
        for where in ("objects", "packs"):  # where chunk files and packs are written
            for dirpath, _dirs, _files in os.walk(root / ".git" / "uniflow" / where):
                os.chmod(dirpath, 0o555)
        cmd = [*prefix, str(SCRIPT), "models", "register", str(f), "--name", "newmodel"]
        r = subprocess.run(
            cmd, cwd=root, env=env(HOME=str(home)), capture_output=True, text=True, timeout=120, check=False
        )
        assert r.returncode != 0, r.stdout
        assert "Traceback" not in r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
        assert "ermission denied" in r.stderr or "read-only" in r.stderr, r.stderr
        # and reading still works
        cmd = [*prefix, str(SCRIPT), "models", "list", "--json"]
        r = subprocess.run(
            cmd, cwd=root, env=env(HOME=str(home)), capture_output=True, text=True, timeout=120, check=False
        )
        assert r.returncode == 0 and MODEL in r.stdout, r.stderr
    finally:
        for dirpath, _dirs, _files in os.walk(base):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- terminal rendering


def test_forced_terminal_rendering(models_repo: Path) -> None:
    tty = {"UNIFLOW_FORCE_TTY": "1", "COLUMNS": "160"}
    out = uniflow("models", "list", cwd=models_repo, extra_env=tty).stdout
    assert "\x1b[" in out and RELATIVE.search(out) and "─" in out
    out = uniflow("models", "list", MODEL, cwd=models_repo, extra_env=tty).stdout
    assert "(latest)" in out and "\x1b[1;32mproduction" in out  # production is bold green
    out = uniflow("models", "show", MODEL, cwd=models_repo, extra_env=tty).stdout
    assert re.search(rf"({RELATIVE.pattern}) by", out)
    out = uniflow("models", "history", MODEL, cwd=models_repo, extra_env=tty).stdout
    assert RELATIVE.search(out)
    r = uniflow("models", "show", "nope", cwd=models_repo, extra_env=tty, code=3)
    assert "\x1b[31m" in r.stderr and "error: model 'nope'" in r.stderr


def test_real_pseudo_terminal(models_repo: Path) -> None:
    import pty

    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(SCRIPT), "models", "list"],
            cwd=models_repo,
            env=env(COLUMNS="150"),
            stdout=secondary,
            stderr=subprocess.PIPE,
            text=False,
        )
        os.close(secondary)
        chunks = []
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
    finally:
        os.close(primary)
    out = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert "\x1b[" in out and MODEL in out and RELATIVE.search(out)


def test_progress_bar_only_on_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from uniflow.cli._common import progress_bar

    monkeypatch.setenv("UNIFLOW_FORCE_TTY", "0")
    with progress_bar("x") as cb:
        assert cb is None
    monkeypatch.setenv("UNIFLOW_FORCE_TTY", "1")
    with progress_bar("x") as cb:
        assert callable(cb)
        cb(10, 100)
        cb(100, 100)


def test_register_with_progress_on_terminal(repo: Path, tmp_path: Path) -> None:
    f = write_blob(tmp_path / "big.bin", 3 * 1024 * 1024, 11)
    r = uniflow("models", "register", str(f), "--name", "big", cwd=repo, extra_env={"UNIFLOW_FORCE_TTY": "1"})
    assert "Registered" in r.stdout
    r = uniflow(
        "models", "export", "big", str(tmp_path / "out"), cwd=repo, extra_env={"UNIFLOW_FORCE_TTY": "1"}
    )
    assert (tmp_path / "out" / "big.bin").stat().st_size == 3 * 1024 * 1024


# --------------------------------------------------------------------------- completion


def complete(words: str, cwd: Path) -> list[str]:
    parts = words.split(" ")
    r = subprocess.run(
        [str(SCRIPT)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env(_UNIFLOW_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(len(parts) - 1)),
        check=False,
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return [line.split(",", 1)[1] for line in r.stdout.splitlines() if "," in line]


def test_completion_of_names_versions_stages(models_repo: Path) -> None:
    assert complete("uniflow models show ", models_repo) == ["fraud-detector", MODEL]
    assert complete("uniflow models show sent", models_repo) == [MODEL]
    assert complete(f"uniflow models show {MODEL} ", models_repo) == ["v1.0.0", "v1.1.0"]
    assert complete(f"uniflow models compare {MODEL} v1.0.0 ", models_repo) == ["v1.1.0"]
    assert complete(f"uniflow models promote {MODEL} v1.0.0 --to ", models_repo) == [
        "development",
        "staging",
        "production",
        "archived",
    ]
    assert complete(f"uniflow models promote {MODEL} v1.0.0 --to PR", models_repo) == ["production"]
    assert "promote" in complete("uniflow models pro", models_repo)
    assert complete(f"uniflow models export {MODEL} v1.1", models_repo) == ["v1.1.0", "v1.1"]  # or a dir


def test_completion_reads_packed_refs_and_custom_stages(models_repo: Path) -> None:
    subprocess.run(["git", "pack-refs", "--all"], cwd=models_repo, check=True)
    (models_repo / ".uniflow" / "config.toml").write_text("[stages.canary]\nsingle = true\n")
    assert complete(f"uniflow models show {MODEL} ", models_repo) == ["v1.0.0", "v1.1.0"]
    assert "canary" in complete("uniflow models rollback x --stage ", models_repo)


def test_completion_never_raises(tmp_path: Path, models_repo: Path) -> None:
    assert complete("uniflow models show ", tmp_path) == []
    assert complete("uniflow models show x --repo /nonexistent/dir ", tmp_path) == []
    assert complete(f"uniflow --repo {models_repo} models show ", tmp_path) == ["fraud-detector", MODEL]
    (models_repo / ".uniflow" / "config.toml").write_text("not [ toml")
    assert complete("uniflow models promote a b --to st", models_repo) == ["staging"]


# --------------------------------------------------------------------------- lazy sharing commands


def test_lazy_commands_load_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from uniflow.cli import _main

    fake = types.ModuleType("uniflow_fake_share")

    @click.command("push")
    def push() -> None:
        """Push things."""
        click.echo("pushed")

    fake.push = push  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uniflow_fake_share", fake)
    group = _main.LazyGroup("t", lazy_commands={"push": "uniflow_fake_share:push"})
    ctx = click.Context(group)
    assert group.list_commands(ctx) == ["push"]
    assert CliRunner().invoke(group, ["push"]).stdout == "pushed\n"


def test_sharing_commands_are_listed() -> None:
    names = cli.list_commands(click.Context(cli))
    assert {"remote", "push", "pull", "hooks", "ci"} <= set(names)


# --------------------------------------------------------------------------- docs


def _walk(command: click.Command, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    out = [prefix]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                out += _walk(sub, (*prefix, name))
    return out


def test_every_command_is_documented() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    commands = _walk(cli, ("uniflow",))
    assert ("uniflow", "models", "promote") in commands
    missing = [
        " ".join(c)
        for c in commands
        if not re.search(rf"(`|\$ ){re.escape(' '.join(c))}(`| |$)", doc, re.MULTILINE)
    ]
    assert missing == [], f"commands not documented in docs/cli.md: {missing}"


def test_help_speaks_to_users_not_developers() -> None:
    """--help never shows the developer note naming the Python method a command calls: the
    note sits below a ``\\f`` in the docstring, which click keeps out of help."""
    runner = CliRunner()
    commands = _walk(cli, ("uniflow",))
    assert len(commands) > 20
    for c in commands:
        out = runner.invoke(cli, [*c[1:], "--help"], prog_name="uniflow")
        assert out.exit_code == 0, (c, out.output)
        assert "Usage: " + " ".join(c) in out.output, c
        assert "Calls ModelRegistry" not in out.output, " ".join(c)
        assert "ModelRegistry" not in out.output, " ".join(c)
        assert "\f" not in out.output, " ".join(c)
    # the note is still there for developers, in the docstring
    models = cli.get_command(click.Context(cli), "models")
    assert isinstance(models, click.Group)
    listing = models.get_command(click.Context(models), "list")
    assert listing is not None and listing.callback is not None
    assert "Calls ModelRegistry.list_models()" in (listing.callback.__doc__ or "")
    out = runner.invoke(cli, ["models", "list", "--help"])
    assert "List all models, or the versions of model NAME." in out.output


def test_every_json_command_documents_its_shape() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    for c in _walk(cli, ("uniflow",)):
        cmd: click.Command | None = cli
        for name in c[1:]:
            assert isinstance(cmd, click.Group)
            cmd = cmd.get_command(click.Context(cmd), name)
        assert cmd is not None
        if any(p.name == "as_json" for p in cmd.params):
            section = doc.split(f"## `{' '.join(c)}`", 1)
            if len(section) == 2:
                body = section[1].split("\n#", 1)[0]
                assert "JSON" in body, f"{' '.join(c)} has --json but its section does not describe the shape"
