"""No code from data (issue 9, item 2): neither a pulled commit nor a manifest chooses code to run.

* The installed Git hooks run uniflow with an isolated interpreter: modules committed to the
  work tree (``click.py``, ``uniflow.py`` ...) are never imported, even by a real ``git pull``
  whose upstream adds them, and even with a ``PYTHONPATH`` naming the work tree.
* A class named in a manifest is imported only when the caller trusts it (``trust=True``),
  or it is already imported, or its top-level module comes from an installed distribution
  found outside the work tree; otherwise ``model=`` is the way (UnsafeLoadError says so).
* Serializer plug-ins are never loaded from a distribution lying in the work tree.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.helpers import (
    GIT_ENV,
    cli,
    clone,
    git,
    make_repo,
    model_dir,
    open_registry,
    run_py,
    shared_setup,
    tree_bytes,
)
from uniflow import ModelRegistry, UnsafeLoadError
from uniflow._records.manifest import Manifest

SHADOWED = ("click.py", "uniflow.py", "msgpack.py", "dulwich.py", "rich.py", "blake3.py", "sitecustomize.py")


def _payload(marker: Path) -> str:
    """Module text that records who imported it (and how) in ``marker``."""
    return (
        "import os, pathlib, sys\n"
        f"pathlib.Path({str(marker)!r}).write_text(f'ran {{__name__}} {{sys.argv}} in {{os.getcwd()}}')\n"
    )


def _git_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **GIT_ENV, **extra}


def _run_git(cwd: Path, *args: str, env: dict[str, str]) -> None:
    r = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, (args, r.stdout, r.stderr)


def _upstream_commit(a: Path, marker: Path, message: str) -> None:
    for name in SHADOWED:
        (a / name).write_text(_payload(marker))
    (a / "train.py").write_text(f"print({message!r})\n")
    git(a, "add", "-A")
    git(a, "commit", "-q", "-m", message)
    git(a, "push", "-q", "origin", "main")


def test_git_pull_and_push_hooks_never_import_modules_from_the_work_tree(tmp_path: Path) -> None:
    """Item 2: the post-merge hook ran ``python -m uniflow`` from the work-tree root, so an
    upstream ``click.py`` ran on the victim's ``git pull``. Real bare repo, real pull/push."""
    bare, a = shared_setup(tmp_path)
    b = clone(bare, tmp_path / "b")
    cli(b, "hooks", "install")
    marker = tmp_path / "PWNED"
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / "src-a", 2, seed=1)), "m", version="v1.0.0")
    ra.promote("m", "v1.0.0", "production")
    cli(a, "push")
    _upstream_commit(a, marker, "hostile modules")

    _run_git(b, "pull", "-q", "origin", "main", env=_git_env())  # runs post-merge
    assert not marker.exists(), marker.read_text()
    assert (b / "click.py").exists()
    assert open_registry(b).get("m", stage="production").version == "v1.0.0"  # the hook did its job

    # pre-push, in the work tree that now holds the hostile modules
    src_b = model_dir(tmp_path / "src-b", 2, seed=2)
    open_registry(b).register(str(src_b), "m", version="v1.1.0")
    _run_git(b, "push", "-q", "origin", "--tags", env=_git_env())
    assert not marker.exists(), marker.read_text()
    assert "refs/tags/models/m/v1.1.0" in git(bare, "for-each-ref")
    c = clone(bare, tmp_path / "c")
    open_registry(c).pull()  # (`python -m uniflow` in a hostile work tree would run its uniflow.py)
    assert tree_bytes(open_registry(c).load_path("m", "v1.1.0")) == tree_bytes(src_b)  # bytes uploaded

    # the console-script fallback (installed interpreter gone), with PYTHONPATH naming the work tree
    ra.promote("m", "v1.0.0", "staging")
    ra.push()  # not `python -m uniflow` here: A's work tree holds the hostile modules too
    _upstream_commit(a, marker, "more hostile modules")
    env = _git_env(
        UNIFLOW_PYTHON="/nonexistent/python",
        PYTHONPATH=".",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    _run_git(b, "pull", "-q", "origin", "main", env=env)
    assert not marker.exists(), marker.read_text()
    assert open_registry(b).get("m", "v1.0.0").stage == "staging"


def _forge_meta(monkeypatch: pytest.MonkeyPatch, reg: ModelRegistry, **meta: Any) -> None:
    real = reg.repository.manifest

    def forged(name: str, version: str) -> Manifest:
        m = copy.deepcopy(real(name, version).to_dict())
        m["serializer_meta"].update(meta)
        return Manifest.from_dict(m)  # built unchecked: past the gate

    monkeypatch.setattr(reg.repository, "manifest", forged)


def test_class_module_named_by_a_manifest_is_not_imported_without_trust(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 2: ``class_module = "this"`` ran that module (a stdlib module is not an installed
    distribution); the refusal comes before any import and names the two ways out."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    registry.register(lin, "lin", version="v1.0.0")
    _forge_meta(monkeypatch, registry, class_module="this", class_qualname="Zen")
    monkeypatch.delitem(sys.modules, "this", raising=False)

    with pytest.raises(UnsafeLoadError, match=r"model=.*trust=True|trust=True.*model=") as exc:
        registry.load("lin")
    assert "this" in str(exc.value)
    assert "this" not in sys.modules and "Beautiful is better" not in capsys.readouterr().out

    target = nn.Linear(3, 2)
    assert registry.load("lin", model=target) is target
    assert torch.equal(target.weight, lin.weight)


_NET = """
import pathlib
pathlib.Path({marker!r}).write_text("imported " + __name__)
import torch


class Net(torch.nn.Module):
    def __init__(self, width: int = 2) -> None:
        super().__init__()
        self.width = width
        self.lin = torch.nn.Linear(width, width)
"""


def test_a_module_in_the_work_tree_is_not_imported_by_load(tmp_path: Path) -> None:
    """Item 2: a module file at the repository root ran its import-time code on load. Fresh
    processes started in the work tree (``python -c``: the work tree is on sys.path)."""
    repo = make_repo(tmp_path / "repo")
    marker = tmp_path / "imported"
    (repo / "evilnet.py").write_text(_NET.format(marker=str(marker)))
    r = run_py(
        "import evilnet\nfrom uniflow import ModelRegistry\n"
        "ModelRegistry().register(evilnet.Net(3), 'm', version='v1.0.0')\n",
        cwd=repo,
    )
    assert r.returncode == 0, r.stderr
    marker.unlink()

    load = (
        "from uniflow import ModelRegistry, UnsafeLoadError\n"
        "try:\n    ModelRegistry().load('m')\nexcept UnsafeLoadError as e:\n    print('REFUSED', e)\n"
    )
    r = run_py(load, cwd=repo)
    assert r.returncode == 0 and "REFUSED" in r.stdout, (r.stdout, r.stderr)
    assert "evilnet.Net" in r.stdout and "model=" in r.stdout and "trust=True" in r.stdout
    assert not marker.exists()

    # the caller's own import, or trust=True, make it loadable
    r = run_py(
        "import evilnet\nfrom uniflow import ModelRegistry\nprint(ModelRegistry().load('m').width)\n",
        cwd=repo,
    )
    assert r.stdout.split() == ["3"], r.stderr
    r = run_py(
        "from uniflow import ModelRegistry\nprint(ModelRegistry().load('m', trust=True).width)\n", cwd=repo
    )
    assert r.stdout.split() == ["3"], r.stderr


def _distribution(site: Path, marker: Path) -> None:
    """A tiny installed distribution ``goodnet`` (package + dist-info) under ``site``."""
    (site / "goodnet").mkdir(parents=True)
    (site / "goodnet" / "__init__.py").write_text(_NET.format(marker=str(marker)))
    info = site / "goodnet-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: goodnet\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("goodnet\n")
    (info / "RECORD").write_text("goodnet/__init__.py,,\ngoodnet-1.0.dist-info/METADATA,,\n")


def test_a_class_from_an_installed_distribution_loads_but_not_the_same_one_in_the_work_tree(
    tmp_path: Path,
) -> None:
    """Item 2: the rule's positive side (an installed distribution outside the work tree is
    imported without trust), and that a distribution lying in the work tree never counts."""
    repo = make_repo(tmp_path / "repo")
    site = tmp_path / "site"
    marker = tmp_path / "imported"
    _distribution(site, marker)
    use_site = f"import sys\nsys.path.append({str(site)!r})\n"
    r = run_py(
        use_site + "import goodnet\nfrom uniflow import ModelRegistry\n"
        "ModelRegistry().register(goodnet.Net(4), 'g', version='v1.0.0')\n",
        cwd=repo,
    )
    assert r.returncode == 0, r.stderr
    r = run_py(
        use_site + "from uniflow import ModelRegistry\nprint(ModelRegistry().load('g').width)\n", cwd=repo
    )
    assert r.stdout.split() == ["4"], r.stderr

    marker.unlink()
    _distribution(repo, marker)  # the same distribution, committed to the work tree
    r = run_py(
        "from uniflow import ModelRegistry, UnsafeLoadError\n"
        "try:\n    ModelRegistry().load('g')\nexcept UnsafeLoadError as e:\n    print('REFUSED', e)\n",
        cwd=repo,
    )
    assert "REFUSED" in r.stdout, (r.stdout, r.stderr)
    assert not marker.exists()


def test_serializer_plugins_are_never_loaded_from_the_work_tree(tmp_path: Path) -> None:
    """Item 2: an entry point declared by a ``*.dist-info`` committed to the work tree (on
    sys.path for ``python -c`` and notebooks there) is not imported by serializer discovery."""
    repo = make_repo(tmp_path / "repo")
    marker = tmp_path / "imported"
    (repo / "evil_ser.py").write_text(_payload(marker))
    info = repo / "evil_ser-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-ser\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[uniflow.serializers]\nevil = evil_ser:Evil\n")
    r = run_py(
        "import numpy as np\nfrom uniflow import ModelRegistry\n"
        "print(ModelRegistry().register(np.zeros(3), 'arr', version='v1.0.0').serializer)\n",
        cwd=repo,
    )
    assert r.stdout.split() == ["numpy"], r.stderr
    assert not marker.exists(), marker.read_text()
