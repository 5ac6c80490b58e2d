"""The committed ``hooks/pre-push`` and ``hooks/post-merge`` are generated from
``hook_script()`` by ``scripts/gen_hooks.py`` (``tests/test_sharing.py`` checks that the
committed ones are equal to it): the generator, its ``--check`` mode, and what the hooks say."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from uniflow._records.refs import TAGS_PREFIX, UNIFLOW_PREFIX
from uniflow.sharing.hooks import HOOK_NAMES, hook_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_hooks.py"


def _gen_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_hooks", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pre_push_fallback_names_the_registry_ref_prefixes() -> None:
    """Without uniflow the committed pre-push refuses a push of registry refs: the prefixes
    it greps for are the ones the registry writes."""
    text = (ROOT / "hooks" / "pre-push").read_text()
    assert f"-e {TAGS_PREFIX}/ -e {UNIFLOW_PREFIX}/" in text


def test_check_mode_reports_a_stale_hook_and_the_generator_rewrites_it(tmp_path: Path) -> None:
    gen = _gen_hooks()
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "pre-push").write_text(hook_script("pre-push") + "# edited by hand\n")
    (hooks / "pre-push").chmod(0o755)
    assert {p.name for p in gen.stale(hooks)} == {"pre-push", "post-merge"}  # edited, and missing
    assert {p.name for p in gen.write(hooks)} == {"pre-push", "post-merge"}
    assert gen.stale(hooks) == []
    for name in HOOK_NAMES:
        assert (hooks / name).read_text() == hook_script(name) and os.access(hooks / name, os.X_OK)


def test_check_mode_of_the_script_passes_on_this_tree() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
