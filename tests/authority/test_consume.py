"""Consumers that verify what they read (docs/governance.md, "Consumers"): ``uniflow get URL
NAME --stage S --require-signed [--trust-root FILE]``, ``ModelRegistry(url, signatures=...)``,
``registry.load(..., signatures=...)`` and ``[signatures] verify`` in a clone's config.

A real bare repository read by ``file://`` URL through the per-user mirror; keys made by
``ssh-keygen``; the policy committed signed; promotions made through uniflow with
``gpg.format=ssh``; forgeries made with plain git in the bare repository (``git commit-tree``
signed or not, ``git update-ref``), as an attacker with push access would.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, shared_setup
from uniflow import ConfigError, IntegrityError, ModelRegistry, PolicyError, UniflowWarning, UsageError
from uniflow._records.config import parse_config

from .conftest import Key, git
from .test_signed_lifecycle import ALICE, BOB, CAROL, CI, MALLORY, POLICY, as_user, keys, signers_line

__all__ = ["keys"]  # the fixture, shared with test_signed_lifecycle

MODEL = "clf"
LIFECYCLE = f"refs/uniflow/models/{MODEL}"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "deploy"
    d.mkdir()
    return d


def _register(clone: Path, key: Key, n: int) -> str:
    model = clone.parent / f"model-{n}.bin"
    model.write_bytes(bytes([n]) * 4096)
    return as_user(clone, key).register(str(model), MODEL).version


@pytest.fixture
def served(tmp_path: Path, keys: dict[str, Key]) -> dict[str, Any]:
    """``srv/remote.git`` with the policy on main (committed signed by alice) and v1 of clf
    registered by alice, staged by ci, approved by bob and promoted to production by ci, all
    signed through uniflow and pushed with its chunks; v2 registered by alice and staged."""
    bare, clone = shared_setup(tmp_path, blob_url=str(tmp_path / "srv" / "blobs"))
    (clone / ".uniflow/policy.toml").write_text(POLICY)
    allowed = "".join(signers_line(who, k) for who, k in keys.items() if who != MALLORY)
    (clone / ".uniflow/allowed_signers").write_text(allowed)
    git(clone, "add", ".uniflow")
    git(clone, "config", "gpg.format", "ssh")
    git(clone, "config", "user.signingKey", str(keys[ALICE].path))
    git(clone, "commit", "-q", "-S", "-m", "uniflow policy")
    git(clone, "push", "-q", "origin", "main")
    v1 = _register(clone, keys[ALICE], 1)
    as_user(clone, keys[CI]).promote(MODEL, v1, "staging")
    as_user(clone, keys[BOB]).approve(MODEL, v1, for_stage="production")
    as_user(clone, keys[CI]).promote(MODEL, v1, "production")
    v2 = _register(clone, keys[ALICE], 2)
    as_user(clone, keys[CI]).promote(MODEL, v2, "staging")
    ModelRegistry(clone).push()
    return {"bare": bare, "clone": clone, "url": f"file://{bare}", "v1": v1, "v2": v2}


def forge(bare: Path, version: str, to: str, *, key: Key | None = None, action: str = "promote") -> str:
    """A lifecycle commit moving ``version`` to ``to``, made with plumbing in the bare
    repository (signed with ``key`` by ``git commit-tree -S`` when given), and the ref moved."""
    head = git(bare, "rev-parse", LIFECYCLE).stdout.decode().strip()
    state = json.loads(git(bare, "show", f"{head}:state.json").stdout)
    before = state["stage_of"].get(version, "development")
    displaced = next((v for v, s in state["stage_of"].items() if s == to), None)  # single holder
    if displaced is not None:
        state["stage_of"][displaced] = "archived"
    state["stage_of"][version] = to
    state["seq"] += 1
    event: dict[str, Any] = {"action": action, "version": version, "from": before, "to": to}
    event["displaced"] = displaced
    tag = git(bare, "rev-parse", f"refs/tags/models/{MODEL}/{version}").stdout.decode().strip()
    event.update(seq=state["seq"], actor="M <m@example.com>", at="2026-01-01T00:00:00+00:00", tag=tag)

    def blob(obj: dict[str, Any]) -> str:
        data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
        return git(bare, "hash-object", "-w", "--stdin", data=data).stdout.decode().strip()

    tree_text = f"100644 blob {blob(event)}\tevent.json\n100644 blob {blob(state)}\tstate.json\n"
    tree = git(bare, "mktree", data=tree_text.encode()).stdout.decode().strip()
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingKey={key.path}"] if key else []
    args = [*sign, "commit-tree", tree, "-p", head, "-m", f"{action} {MODEL} {version}"]
    commit = git(bare, *args, *(["-S"] if key else [])).stdout.decode().strip()
    git(bare, "update-ref", LIFECYCLE, commit, head)
    return commit


def get(cwd: Path, url: str, *args: str, code: int = 0) -> Any:
    return cli(cwd, "get", url, MODEL, *args, code=code)


def one_error(r: Any) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return str(lines[0])


# ---------------------------------------------------------------------- require
def test_require_serves_a_properly_promoted_holder_and_says_how_it_trusted(
    served: dict[str, Any], out_dir: Path
) -> None:
    r = get(out_dir, served["url"], "--stage", "production", "--require-signed", "-o", "prod")
    assert f"{MODEL} {served['v1']}" in r.stdout and (out_dir / "prod").is_dir()
    assert "signatures verified" in r.stdout and "trust on first use" in r.stdout
    r = get(out_dir, served["url"], "--stage", "staging", "--require-signed", "-o", "stg", "--json")
    assert json.loads(r.stdout)["version"] == served["v2"]


def test_require_with_a_pinned_trust_root_serves_and_a_different_admin_set_refuses(
    served: dict[str, Any], out_dir: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    good = tmp_path / "admins"
    good.write_text(signers_line(ALICE, keys[ALICE]))
    pinned = ("-s", "production", "--require-signed", "--trust-root")
    for out in ("a", "a2", "a3"):  # the third read answers from the kept verdict
        r = get(out_dir, served["url"], *pinned, str(good), "-o", out)
        assert f"pinned by --trust-root {good}" in r.stdout
    other = tmp_path / "other-admins"
    other.write_text(signers_line(MALLORY, keys[MALLORY]))
    r = get(
        out_dir, served["url"], "-s", "production", "--require-signed", "--trust-root", str(other),
        "-o", "b", code=10,
    )  # fmt: skip
    assert "cannot verify signatures" in one_error(r) and not (out_dir / "b").exists()


def test_require_refuses_an_unsigned_promotion_made_with_raw_git(
    served: dict[str, Any], out_dir: Path
) -> None:
    forge(served["bare"], served["v2"], "production")
    r = get(out_dir, served["url"], "--stage", "production", "--require-signed", "-o", "p", code=10)
    assert served["v2"] in one_error(r) and "not signed by an allowed signer" in r.stderr
    assert not (out_dir / "p").exists()


def test_require_refuses_a_promotion_signed_by_a_non_promoter(
    served: dict[str, Any], out_dir: Path, keys: dict[str, Key]
) -> None:
    clone = served["clone"]
    as_user(clone, keys[CAROL]).approve(MODEL, served["v2"], for_stage="production")
    ModelRegistry(clone).push()
    forge(served["bare"], served["v2"], "production", key=keys[BOB])  # bob reviews, never promotes
    r = get(out_dir, served["url"], "--stage", "production", "--require-signed", "-o", "p", code=10)
    line = one_error(r)
    assert served["v2"] in line and BOB in line and "promot" in line, line
    assert not (out_dir / "p").exists()


def test_require_refuses_a_promotion_without_its_approvals(
    served: dict[str, Any], out_dir: Path, keys: dict[str, Key]
) -> None:
    forge(served["bare"], served["v2"], "production", key=keys[CI])  # a releaser, but nobody approved
    r = get(out_dir, served["url"], "--stage", "production", "--require-signed", "-o", "p", code=10)
    assert "approv" in one_error(r) and not (out_dir / "p").exists()


def test_require_refuses_a_lifecycle_reset_to_an_older_signed_commit(
    served: dict[str, Any], out_dir: Path, keys: dict[str, Key], cache_dir: Path
) -> None:
    bare, clone, v2 = served["bare"], served["clone"], served["v2"]
    older = git(bare, "rev-parse", LIFECYCLE).stdout.decode().strip()  # v1 in production
    get(out_dir, served["url"], "-s", "production", "--require-signed", "-o", "seen-v1")
    as_user(clone, keys[BOB]).approve(MODEL, v2, for_stage="production")
    as_user(clone, keys[CI]).promote(MODEL, v2, "production")
    ModelRegistry(clone).push()
    r = get(out_dir, served["url"], "-s", "production", "--require-signed", "-o", "seen-v2")
    assert v2 in r.stdout
    git(bare, "update-ref", LIFECYCLE, older)  # the attack: an older, validly signed head
    r = get(out_dir, served["url"], "-s", "production", "--require-signed", "-o", "back", code=5)
    assert "rolled back to an older commit" in one_error(r) and not (out_dir / "back").exists()
    assert (cache_dir / "mirrors").is_dir()
    # a consumer that never saw the newer head cannot tell, and gets the (signed) v1
    fresh = {"UNIFLOW_CACHE_DIR": str(out_dir / "fresh-cache")}
    args = ("get", served["url"], MODEL, "-s", "production", "--require-signed", "-o", "f")
    r = cli(out_dir, *args, env=fresh)
    assert served["v1"] in r.stdout


def test_require_offline_reads_the_history_an_online_read_fetched(
    served: dict[str, Any], out_dir: Path
) -> None:
    get(out_dir, served["url"], "-s", "production", "--require-signed", "-o", "on")
    r = get(out_dir, served["url"], "-s", "production", "--require-signed", "--offline", "-o", "off")
    assert served["v1"] in r.stdout


# ---------------------------------------------------------------------- warn, off, config
def test_warn_by_default_once_a_policy_exists_warns_and_serves(served: dict[str, Any], out_dir: Path) -> None:
    forge(served["bare"], served["v2"], "production")
    r = get(out_dir, served["url"], "--stage", "production", "-o", "p")
    assert (out_dir / "p").is_dir() and served["v2"] in r.stdout
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "not signed by an allowed signer" in warned[0], r.stderr
    with pytest.warns(UniflowWarning, match="not signed by an allowed signer"):
        assert ModelRegistry(served["url"]).get(MODEL, stage="production").version == served["v2"]


def test_off_serves_silently(served: dict[str, Any]) -> None:
    forge(served["bare"], served["v2"], "production")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg = ModelRegistry(served["url"], signatures="off")
        assert reg.get(MODEL, stage="production").version == served["v2"]


def test_registry_and_load_take_signatures_require(served: dict[str, Any], keys: dict[str, Key]) -> None:
    url = served["url"]
    reg = ModelRegistry(url, signatures="require")
    assert reg.get(MODEL, stage="production").version == served["v1"]
    assert reg.load(MODEL, served["v1"], signatures="require").is_file()  # a version by name
    forge(served["bare"], served["v2"], "production", key=keys[CI])
    with pytest.raises(PolicyError, match="approv"):
        ModelRegistry(url).load(MODEL, stage="production", signatures="require")
    with pytest.raises(UsageError, match="signatures= must be one of"):
        ModelRegistry(url, signatures="strict")


def test_a_clone_config_require_refuses_and_a_bad_value_is_a_config_error(
    served: dict[str, Any], keys: dict[str, Key]
) -> None:
    clone = served["clone"]
    forge(clone, served["v2"], "production", key=keys[CI])
    config = clone / ".uniflow/config.toml"
    text = config.read_text()
    config.write_text(text + '\n[signatures]\nverify = "require"\n')
    with pytest.raises(PolicyError, match="approv"):
        ModelRegistry(clone).get(MODEL, stage="production")
    assert ModelRegistry(clone).get(MODEL, stage="production", signatures="off").version == served["v2"]
    config.write_text(text + '\n[signatures]\nverify = "maybe"\n')
    with pytest.raises(ConfigError, match="signatures.verify: must be one of"):
        ModelRegistry(clone).get(MODEL, stage="production")


def test_signatures_config_values() -> None:
    assert parse_config({}).verify_signatures is None
    for mode in ("off", "warn", "require"):
        assert parse_config({"signatures": {"verify": mode}}).verify_signatures == mode
    for bad in ({"verify": True}, {"verify": "yes"}, {"check": "off"}):
        with pytest.raises(ConfigError, match=r"signatures\."):
            parse_config({"signatures": bad})


def test_a_cli_get_with_require_signed_on_a_registry_without_policy_refuses(tmp_path: Path) -> None:
    bare, clone = shared_setup(tmp_path, blob_url=str(tmp_path / "srv" / "blobs"))
    model = tmp_path / "m.bin"
    model.write_bytes(b"x" * 100)
    reg = ModelRegistry(clone)
    v = reg.register(str(model), MODEL).version
    reg.promote(MODEL, v, "production")
    reg.push()
    work = tmp_path / "w"
    work.mkdir()
    r = cli(work, "get", f"file://{bare}", MODEL, "-s", "production", "--require-signed", code=10)
    assert "no policy" in one_error(r)
    cli(work, "get", f"file://{bare}", MODEL, "-s", "production", "-o", "plain")  # off: as before


def test_integrity_error_is_what_a_rollback_raises_in_python(
    served: dict[str, Any], keys: dict[str, Key]
) -> None:
    bare, clone, v2 = served["bare"], served["clone"], served["v2"]
    older = git(bare, "rev-parse", LIFECYCLE).stdout.decode().strip()
    as_user(clone, keys[BOB]).approve(MODEL, v2, for_stage="production")
    as_user(clone, keys[CI]).promote(MODEL, v2, "production")
    ModelRegistry(clone).push()
    assert ModelRegistry(served["url"], signatures="require").get(MODEL, stage="production").version == v2
    git(bare, "update-ref", LIFECYCLE, older)
    with pytest.raises(IntegrityError, match="rolled back"):
        ModelRegistry(served["url"], signatures="require").get(MODEL, stage="production")
    with pytest.warns(UniflowWarning, match="rolled back"):
        ModelRegistry(served["url"], signatures="warn").get(MODEL, stage="production")
