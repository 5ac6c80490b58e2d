"""Names, versions, stage and remote names, metric keys and NaN metrics (issue 9, item 11).

Name/version patterns ended in ``$`` and accepted a trailing newline; semver versions
ending in ``.lock`` passed; both then failed inside dulwich (exit 1) after objects were
written. Metric names with newlines forged ``Uniflow-*`` trailers in the version commit.
NaN/inf metrics came out of ``--json`` as the strings "nan"/"inf" while the docs say null.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.adversarial._forge_git import one_line_error
from tests.helpers import cli, git, write_config
from uniflow import InvalidNameError, InvalidVersionError, ModelRegistry, RepositoryError, UsageError


def _nothing_written(reg: ModelRegistry) -> None:
    for where in ("objects", "packs"):  # no chunk file, no pack
        found = reg.store.root / where
        assert not found.exists() or not [p for p in found.rglob("*") if p.is_file()]
    assert git(reg.root, "for-each-ref", "refs/tags", "refs/uniflow").strip() == ""


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights" * 1000)
    return f


def test_model_name_with_a_trailing_newline_is_refused_before_any_write(
    registry: ModelRegistry, weights: Path
) -> None:
    with pytest.raises(InvalidNameError):
        registry.register(str(weights), "m\n", version="v1.0.0")
    _nothing_written(registry)


@pytest.mark.parametrize("version", ["v1.0.0\n", "v1.0.0-rc.lock", "1.0.0+build.lock"])
def test_version_that_is_no_git_ref_component_is_refused_before_any_write(
    registry: ModelRegistry, weights: Path, version: str
) -> None:
    with pytest.raises(InvalidVersionError):
        registry.register(str(weights), "m", version=version)
    _nothing_written(registry)
    line = one_line_error(
        cli(
            registry.root, "models", "register", str(weights), "--name", "m", "--version", version, code=2
        ).stderr
    )
    assert "invalid version" in line
    _nothing_written(registry)


def test_stage_and_remote_names_are_matched_whole(registry: ModelRegistry, tmp_path: Path) -> None:
    write_config(registry.root, '[stages."canary\\n"]\nsingle = true\n')
    with pytest.raises(RepositoryError, match="invalid custom stage name"):
        ModelRegistry(registry.root).stages()
    write_config(registry.root, "")
    one_line_error(cli(registry.root, "remote", "add", "origin\n", str(tmp_path / "blobs"), code=2).stderr)
    assert "origin" not in (registry.uniflow_dir / "config.toml").read_text()


@pytest.mark.parametrize("where", ["metrics", "params", "tags"])
def test_keys_with_newlines_are_refused_before_any_write(
    registry: ModelRegistry, weights: Path, where: str
) -> None:
    with pytest.raises(UsageError, match=r"invalid .* key"):
        registry.register(str(weights), "m", version="v1.0.0", **{where: {"acc\nUniflow-Action: promote": 1}})
    _nothing_written(registry)


def test_metric_key_with_newline_from_the_cli_is_refused(registry: ModelRegistry, weights: Path) -> None:
    r = cli(
        registry.root,
        "models",
        "register",
        str(weights),
        "--name",
        "m",
        "--metric",
        "acc\nUniflow-Action: promote=1",
        code=2,
    )
    assert "invalid metric key" in one_line_error(r.stderr)
    _nothing_written(registry)


def test_the_version_commit_message_cannot_be_forged_by_a_metric_key(
    registry: ModelRegistry, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: even a manifest that skipped key validation (both checks switched
    off here) writes one line per metric with its key JSON-encoded, so no ``Uniflow-*``
    trailer can be forged."""
    monkeypatch.setattr("uniflow._records.versions.check", lambda *a, **k: None, raising=False)
    registry.register(str(weights), "m", version="v1.0.0", metrics={"acc": 0.9})
    m = dataclasses.replace(
        registry.repository.index.manifest("m", "v1.0.0")[1],
        version="v2.0.0",
        metrics={"x\n\nUniflow-Action: promote\nUniflow-To: production\nUniflow-Z: ": 1},
    )
    registry.repository.index.write_version(m, registry.git.head(), registry.git.identity())
    trailers = git(registry.root, "log", "-1", "--format=%(trailers)", "models/m/v2.0.0^{commit}")
    assert "Uniflow" not in trailers, trailers
    body = git(registry.root, "log", "-1", "--format=%B", "models/m/v2.0.0^{commit}")
    assert not [ln for ln in body.splitlines() if ln.startswith("Uniflow-")], body


def test_nan_and_inf_metrics_are_null(registry: ModelRegistry, weights: Path) -> None:
    registry.register(
        str(weights),
        "m",
        version="v1.0.0",
        metrics={"loss": float("nan"), "gain": float("inf"), "acc": 0.5},
        params={"lr": float("-inf")},
    )
    mv = ModelRegistry(registry.root).get("m")
    assert mv.metrics == {"loss": None, "gain": None, "acc": 0.5} and mv.params == {"lr": None}
    shown = json.loads(cli(registry.root, "models", "show", "m", "--json").stdout)
    assert shown["metrics"] == {"acc": 0.5, "gain": None, "loss": None} and shown["params"] == {"lr": None}
    listed = json.loads(cli(registry.root, "models", "list", "m", "--json").stdout)
    assert listed[0]["metrics"]["loss"] is None


@pytest.mark.parametrize("bad", ["new\nline.bin", "bell\x07.bin", ".git"])
def test_a_version_the_read_gate_would_refuse_is_never_written(
    registry: ModelRegistry, tmp_path: Path, bad: str
) -> None:
    """A directory model holding a file whose name no manifest may carry (a control
    character; a ``.git`` file, which an export would turn into a gitfile) is refused
    before any Git object is written, instead of becoming a version nobody can read."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "ok.bin").write_bytes(b"fine")
    (d / bad).write_bytes(b"gitdir: /tmp/elsewhere\n")
    with pytest.raises(UsageError, match=r"cannot register: .*invalid file path"):
        registry.register(str(d), "m", version="v1.0.0")
    assert git(registry.root, "for-each-ref", "refs/tags", "refs/uniflow").strip() == ""
