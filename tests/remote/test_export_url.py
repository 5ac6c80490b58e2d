"""``uniflow --repo URL models export``: a version's files from a registry read by Git URL,
with the blob remote chosen as ``uniflow get`` chooses it (``--blob``, ``--offline``)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cli, publish_registry, tree_bytes


def test_export_by_url_takes_blob_as_the_advice_says(tmp_path: Path, empty_dir: Path) -> None:
    """The remote's config names a blob remote outside its directory: refused, and the error
    says 'pass --blob URL'; export takes --blob (top-level --repo and the command's own)."""
    outside = tmp_path / "elsewhere" / "blobs"
    pub = publish_registry(tmp_path, blob_url=str(outside))
    url = f"file://{pub['bare']}"
    r = cli(empty_dir, "--repo", url, "models", "export", "clf", "v1.0.0", "out", code=9)
    assert "refused" in r.stderr and "pass --blob URL" in r.stderr and r.stderr.count("\n") == 1
    assert not (empty_dir / "out").exists()
    r = cli(empty_dir, "--repo", url, "models", "export", "clf", "v1.0.0", "out", "--blob", str(outside))
    assert "Exported clf v1.0.0" in r.stdout
    assert tree_bytes(empty_dir / "out") == tree_bytes(pub["v1"])
    r = cli(
        empty_dir,
        "models",
        "export",
        "clf",
        "--stage",
        "production",
        "prod",
        "--repo",
        url,
        "--blob",
        str(outside),
        "--json",
    )
    assert json.loads(r.stdout)["version"] == "v1.0.0"
    assert tree_bytes(empty_dir / "prod") == tree_bytes(pub["v1"])
    # --offline as in `uniflow get`: the Git side and the chunks from the cache alone
    outside.rename(tmp_path / "blobs-gone")
    pub["bare"].rename(tmp_path / "bare-gone")
    r = cli(empty_dir, "--repo", url, "models", "export", "clf", "v1.0.0", "again", "--offline")
    assert tree_bytes(empty_dir / "again") == tree_bytes(pub["v1"])
    assert not (empty_dir / ".git").exists()


def test_blob_and_offline_on_a_work_tree_are_usage_errors(repo: Path) -> None:
    for option in (["--blob", "/srv/blobs"], ["--offline"]):
        r = cli(repo, "models", "export", "m", "out", *option, code=2)
        assert "Git URL" in r.stderr and r.stderr.count("\n") == 1
    assert not (repo / "out").exists()
