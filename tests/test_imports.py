"""``import uniflow`` is cheap (the public names are pinned in ``test_public_api.py``)."""

from __future__ import annotations

import subprocess
import sys

import uniflow


def test_read_only_registry_error_exit_code() -> None:
    # a write on a registry opened by Git URL: a RepositoryError (exit 8), one line naming the URL
    err = uniflow.ReadOnlyRegistryError("git://host/repo.git", "promote")
    assert isinstance(err, uniflow.RepositoryError) and err.exit_code == 8
    assert "git://host/repo.git" in str(err) and "clone" in str(err) and "\n" not in str(err)


def test_import_uniflow_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, uniflow\n"
        "heavy = [m for m in ('torch', 'sklearn', 'fsspec', 's3fs', 'rich.console', 'dulwich', "
        "'numpy', 'skops')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


def test_using_the_registry_does_not_import_ml_frameworks(tmp_path) -> None:
    code = (
        "import sys, subprocess\n"
        f"subprocess.run(['git', 'init', '-q', {str(tmp_path)!r}], check=True)\n"
        "from uniflow import ModelRegistry\n"
        f"r = ModelRegistry({str(tmp_path)!r})\n"
        f"open({str(tmp_path / 'f.bin')!r}, 'wb').write(b'x')\n"
        f"r.register(model={str(tmp_path / 'f.bin')!r}, name='m', version='v1.0.0')\n"
        "r.load('m'); r.list_models()\n"
        "print(','.join(m for m in ('torch', 'sklearn', 'fsspec', 'rich.console') if m in sys.modules))\n"
    )
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "PATH": __import__("os").environ["PATH"]}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr
