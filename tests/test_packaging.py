"""The distribution is ``uniflow-registry``: every documented install line names it, and a
wheel built from this tree installs by that name (with an extra) and gives the ``uniflow``
command.

``uniflow`` on PyPI is an unrelated project (an LLM data-augmentation library): a bare
``pip install uniflow`` or ``'uniflow[s3]'`` installs it, and then ``uniflow: command not
found``. The import package and the command stay ``uniflow``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIST = "uniflow-registry"

# pip's cache of the user running the tests, read before conftest points HOME at a tmp dir,
# so the dependencies of the install test come from the cache after the first run.
_PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")

# --- the checker for documented install lines ------------------------------------------

# `uniflow[extra]` or `uniflow==1.2` anywhere is a requirement (PEP 508), never a command.
_SPEC = re.compile(
    r"(?<![\w./-])uniflow(?:\[[\w,\s-]*\]|\s*(?:===?|>=|<=|~=|!=)\s*[\w*]|\s*@\s*(?:git\+|https?:|file:))"
)
# An install command and its arguments, up to the end of the shell command.
_INSTALL = re.compile(
    r"(?:\bpython[\d.]*\s+-m\s+pip|\bpip[\d.]*|\buv\s+pip|\buv|\bpipx|\bpoetry|\bpdm|\bconda)"
    r"\s+(?:install|add)\b(?P<args>[^;&|#`)\n]*)"
)
# A quoted "uniflow" in a dependency list (pyproject, setup.py, an environment file).
_DEPENDENCY = re.compile(r"(?:dependencies|requires|install_requires)\b.*['\"]uniflow['\"]")
# A line of a requirements file.
_REQ_LINE = re.compile(r"^\s*uniflow\s*(?:$|#|;)")


def bare_requirements(text: str, requirements_file: bool = False) -> list[str]:
    """The requirements in ``text`` that name the distribution ``uniflow`` (each as the
    offending line, stripped), whatever quoting, extras or version they carry."""
    found: list[str] = []
    joined = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    for line in joined.splitlines():
        args = [m.group("args") for m in _INSTALL.finditer(line)]
        words = [w.strip("'\"") for a in args for w in a.split()]
        if (
            _SPEC.search(line)
            or "uniflow" in words
            or _DEPENDENCY.search(line)
            or (requirements_file and _REQ_LINE.match(line))
        ):
            found.append(line.strip())
    return found


def test_checker_finds_bare_requirements() -> None:
    bad = [
        "pip install uniflow",
        'pip install "uniflow[s3]"',
        "    pip install 'uniflow[s3]' && \\",
        "RUN python3 -m pip install --no-cache-dir -U uniflow && uniflow get x",
        "RUN pip install \\\n    uniflow",
        "uv add uniflow",
        "pipx install uniflow",
        "(needs the `ui` extra: `pip install\n'uniflow[ui]'`)",
        "install uniflow[torch] to load them",
        "uniflow==0.2.0",
        "uniflow >= 0.2",
        'dependencies = ["uniflow"]',
        "uniflow @ git+https://github.com/team/uniflow@v0.2.0",
    ]
    for text in bad:
        assert bare_requirements(text), text
    assert bare_requirements("uniflow\nnumpy\n", requirements_file=True)
    good = [
        "pip install uniflow-registry",
        "pip install 'uniflow-registry[s3]'",
        'pip install "uniflow-registry[ui]" && uniflow ui --export site',
        "pip install -e '.[dev]'",
        "uniflow get https://github.com/team/x.git clf --stage production",
        "uniflow ui  # pip install 'uniflow-registry[ui]'",
        "uniflow hooks install",
        "uniflow import mlflow --tracking-uri sqlite:///mlflow.db",
        'log = logging.getLogger("uniflow")',
        'info["uniflow"] = uniflow.__version__',
        "pip install uniflow-registry@git+https://github.com/team/uniflow@v0.2.0",
        "import uniflow",
        'return (name or "uniflow", email or "uniflow@localhost")',
    ]
    for text in good:
        assert not bare_requirements(text), text
    assert not bare_requirements("uniflow\n")  # the command alone, outside a requirements file


_TEXT = {".md", ".txt", ".in", ".yml", ".yaml", ".toml", ".cfg", ".py", ".ipynb", ".sh", ".html", ".j2"}


def _scanned_files(*tops: str) -> list[Path]:
    files: list[Path] = []
    for top in tops:
        p = ROOT / top
        candidates = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in candidates:
            if "__pycache__" in f.parts:
                continue
            if f.suffix in _TEXT or f.name.startswith("Dockerfile") or f.parent.name == "hooks":
                files.append(f)
    return files


def _offences(files: list[Path]) -> list[str]:
    out = []
    for f in files:
        is_req = f.name.startswith("requirements") or f.suffix == ".in"
        for line in bare_requirements(f.read_text(encoding="utf-8"), requirements_file=is_req):
            out.append(f"{f.relative_to(ROOT)}: {line}")
    return out


# What users copy: the README, the docs, the CI templates and hooks, the examples, the
# Dockerfiles and scripts, and the messages the library prints ("pip install ...[ui]").
_DOCUMENTED = ("README.md", "SECURITY.md", "CONTRIBUTING.md", "docs", "hooks", "examples", "scripts")


def test_documented_install_lines_name_the_distribution() -> None:
    files = _scanned_files(*_DOCUMENTED) + _scanned_files("uniflow")
    assert len(files) > 40  # the scan really reads the docs and the package
    assert _offences(files) == []


def test_pyproject_names_the_distribution_and_keeps_the_command() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST
    assert project["scripts"] == {"uniflow": "uniflow.cli:main"}
    assert "uniflow.serializers" in project["entry-points"]
    # The extras that refer to the project itself must name it, or pip fetches PyPI's uniflow.
    for extra, reqs in project["optional-dependencies"].items():
        for req in reqs:
            name = re.split(r"[\[=<>!~;@\s]", req, maxsplit=1)[0]
            assert name != "uniflow", f"extra {extra!r} requires {req!r}"


# --- the wheel, installed by name into a fresh venv -------------------------------------


def _pip(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this environment's pip against ``python``'s environment (``pip --python``)."""
    env = {**os.environ, "PIP_CACHE_DIR": _PIP_CACHE, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    cmd = [sys.executable, "-m", "pip", "--python", str(python), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of this tree (the build writes build/ and *.egg-info)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "uniflow", src / "uniflow", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return wheels


def test_wheel_installs_by_name_with_an_extra(tmp_path: Path) -> None:
    """About 6 s (measured: 5.8 s with pip's cache warm, 6.1 s with it empty)."""
    pytest.importorskip("setuptools")
    wheels = _build_wheel(tmp_path)
    built = [w.name for w in wheels.glob("*.whl")]
    assert len(built) == 1 and built[0].startswith("uniflow_registry-"), built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # 1. By name from our wheel directory only (--no-index): the index is never asked for
    #    uniflow-registry, so nothing published under that name (or PyPI's unrelated
    #    "uniflow") can be picked.
    report = tmp_path / "report.json"
    r = _pip(py, "install", "--no-index", "--no-deps", "--find-links", str(wheels),
             "--report", str(report), f"{DIST}[gto]", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (item,) = json.loads(report.read_text())["install"]
    assert item["metadata"]["name"] == DIST
    assert item["download_info"]["url"].startswith(wheels.as_uri()), item["download_info"]
    # 2. The same requirement again, now with the index: uniflow-registry is installed and
    #    satisfies it (no --upgrade), so only its dependencies and the extra's are fetched.
    r = _pip(
        py, "install", "--find-links", str(wheels), "--report", str(report), f"{DIST}[gto]", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    fetched = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert DIST not in fetched and "uniflow" not in fetched and "pyyaml" in fetched, fetched
    # The command, from the fresh venv, run outside this tree (no import from the work tree).
    from uniflow._version import __version__

    out = subprocess.run(
        [str(venv / "bin" / "uniflow"), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"uniflow {__version__}"
    meta = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m, uniflow, yaml; "
         "print(m.version('uniflow-registry'), uniflow.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert meta[0] == __version__ and Path(meta[1]).is_relative_to(venv), meta
