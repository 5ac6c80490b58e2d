#!/usr/bin/env python3
"""Write ``hooks/pre-push`` and ``hooks/post-merge`` from ``uniflow.sharing.hooks.hook_script``.

The committed hooks are what ``uniflow hooks install`` writes into ``.git/hooks`` (without a
pinned interpreter), kept in the repository for people who install hooks by hand or with a
hook manager. ``hook_script()`` is their only source: after changing it, run

    python scripts/gen_hooks.py            # rewrite hooks/pre-push and hooks/post-merge
    python scripts/gen_hooks.py --check    # exit 1 and name the stale files (what CI runs)

``tests/test_hooks_generated.py`` fails while a committed hook differs from ``hook_script()``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from uniflow.sharing.hooks import HOOK_NAMES, hook_script  # noqa: E402 (after the path above)


def stale(hooks_dir: Path) -> list[Path]:
    """The committed hooks in ``hooks_dir`` whose text or executable bit differs from ``hook_script()``."""
    out = []
    for name in HOOK_NAMES:
        path = hooks_dir / name
        try:
            ok = path.read_text() == hook_script(name) and path.stat().st_mode & 0o111 == 0o111
        except FileNotFoundError:
            ok = False
        if not ok:
            out.append(path)
    return out


def write(hooks_dir: Path) -> list[Path]:
    """Rewrite the stale hooks in ``hooks_dir`` (mode 0755); the paths written."""
    written = stale(hooks_dir)
    for path in written:
        path.write_text(hook_script(path.name))
        path.chmod(0o755)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale hooks (exit 1 if any)")
    args = parser.parse_args(argv)
    hooks_dir = ROOT / "hooks"
    if args.check:
        paths = stale(hooks_dir)
        for path in paths:
            print(
                f"{path.relative_to(ROOT)} differs from hook_script(); run scripts/gen_hooks.py",
                file=sys.stderr,
            )
        return 1 if paths else 0
    for path in write(hooks_dir):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
