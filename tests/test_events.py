"""Promotion events (issue 26, item 1): event tags ``uniflow/<model>/<stage>/<seq>`` written
with ``[events] tags = true``, pushed with the lifecycle, listed and shown by ``uniflow
events``; ``uniflow watch`` lives in tests/remote/test_watch.py, the CI templates in
tests/ui/test_deploy_templates.py. Real git throughout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    GIT_ENV,
    ROOT,
    cli,
    git,
    model_dir,
    open_registry,
    remote_chunks,
    shared_setup,
    write_config,
)

EVENTS_ON = "[events]\ntags = true\n"


def _registry(tmp_path: Path, config: str = EVENTS_ON) -> tuple[Path, Path, Any]:
    """``(bare, clone, registry)``: clf v1.0.0 and v1.1.0 registered in a clone of ``bare``."""
    bare, a = shared_setup(tmp_path, config_extra=config)
    reg = open_registry(a)
    reg.register(model=str(model_dir(tmp_path / "m1", 2, seed=1)), name="clf", version="v1.0.0")
    reg.register(model=str(model_dir(tmp_path / "m2", 2, seed=2)), name="clf", version="v1.1.0")
    return bare, a, reg


def _event_tags(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)", "refs/tags/uniflow").split()


# ---------------------------------------------------------------------- writing
def test_each_stage_move_writes_an_annotated_tag_git_reads(tmp_path: Path) -> None:
    _bare, a, reg = _registry(tmp_path)
    reg.promote("clf", "v1.0.0", "production")  # seq 3 (two registers before)
    reg.promote("clf", "v1.1.0", "production", reason="better")  # seq 4, v1.0.0 archived
    reg.rollback("clf", "production")  # seq 5
    reg.archive("clf", "v1.1.0")  # seq 6 (already archived by the rollback: recorded again)
    reg.close()
    assert _event_tags(a) == [
        "refs/tags/uniflow/clf/archived/6",
        "refs/tags/uniflow/clf/production/3",
        "refs/tags/uniflow/clf/production/4",
        "refs/tags/uniflow/clf/production/5",
    ]
    assert git(a, "cat-file", "-t", "uniflow/clf/production/4").strip() == "tag"
    shown = git(a, "cat-file", "-p", "uniflow/clf/production/4")
    header, _, body = shown.partition("\n\n")
    assert "type commit" in header and "tag uniflow/clf/production/4" in header
    record = json.loads(body)
    assert record == {
        "format": 1,
        "model": "clf",
        "version": "v1.1.0",
        "stage": "production",
        "seq": 4,
        "action": "promote",
        "actor": record["actor"],
        "time": record["time"],
        "from": "development",
        "displaced": "v1.0.0",
        "reason": "better",
        "tag": "uniflow/clf/production/4",
    }
    assert "<" in record["actor"]
    # the tag points at the version commit (what the version tag points at)
    assert git(a, "rev-parse", "uniflow/clf/production/4^{commit}") == git(
        a, "rev-parse", "models/clf/v1.1.0^{commit}"
    )
    assert (
        json.loads(git(a, "cat-file", "-p", "uniflow/clf/production/5").partition("\n\n")[2])["action"]
        == "rollback"
    )
    for ref in _event_tags(a):
        git(a, "check-ref-format", ref)
        assert not re.search(r"[@#:]", ref)  # GTO's tag syntax (name@v, name#stage#n) never matches
    git(a, "fsck", "--strict", "--no-dangling")


def test_no_event_tags_without_the_setting(tmp_path: Path) -> None:
    _bare, a, reg = _registry(tmp_path, config="")
    reg.promote("clf", "v1.0.0", "production")
    reg.close()
    assert _event_tags(a) == []


def test_event_tags_write_no_reflog_even_when_git_logs_every_ref(tmp_path: Path) -> None:
    _bare, a, reg = _registry(tmp_path)
    git(a, "config", "core.logAllRefUpdates", "always")
    reg.promote("clf", "v1.0.0", "production")
    reg.close()
    assert not (a / ".git" / "logs" / "refs" / "tags" / "uniflow").exists()
    git(a, "gc", "-q")  # reads every reflog entry as a commit: no "not a commit" error
    assert (
        "error"
        not in subprocess.run(
            ["git", "fsck", "--strict"], cwd=a, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
        ).stderr
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[events]\ntags = "yes"\n', "events.tags"),
        ("[events]\ntag = true\n", "events.tag"),
        ("events = 1\n", "[events]"),
    ],
)
def test_a_bad_events_setting_is_one_config_error(tmp_path: Path, text: str, key: str) -> None:
    _bare, a, reg = _registry(tmp_path, config="")
    reg.close()
    write_config(a, text)
    r = cli(a, "models", "promote", "clf", "v1.0.0", "--to", "production", code=8)
    assert key in r.stderr and r.stderr.count("\n") == 1
    assert _event_tags(a) == []


def test_event_tags_are_never_taken_for_versions(tmp_path: Path) -> None:
    """Models named ``uniflow`` and ``models`` (their event tags look most like other refs):
    listings, --json and models list after git pack-refs show exactly the versions."""
    _bare, a, reg = _registry(tmp_path)
    for name in ("uniflow", "models"):
        reg.register(model=str(model_dir(tmp_path / name, 1, seed=5)), name=name, version="v1.0.0")
        reg.promote(name, "v1.0.0", "production")
        reg.promote(name, "v1.0.0", "staging")
    reg.promote("clf", "v1.1.0", "production")
    reg.close()
    assert "refs/tags/uniflow/models/staging/3" in _event_tags(a)
    for packed in (False, True):
        if packed:
            git(a, "pack-refs", "--all")
        listing = json.loads(cli(a, "models", "list", "--json").stdout)
        assert {m["name"]: m["versions"] for m in listing} == {"clf": 2, "models": 1, "uniflow": 1}
        assert {m["name"]: m["latest"] for m in listing} == {
            "clf": "v1.1.0",
            "models": "v1.0.0",
            "uniflow": "v1.0.0",
        }
        versions = json.loads(cli(a, "models", "list", "uniflow", "--json").stdout)
        assert [v["version"] for v in versions] == ["v1.0.0"]
        assert "skipped" not in cli(a, "models", "list").stderr


# ---------------------------------------------------------------------- push and hooks
def test_push_sends_the_event_tags_with_the_lifecycle(tmp_path: Path) -> None:
    bare, a, reg = _registry(tmp_path)
    reg.promote("clf", "v1.0.0", "staging")
    reg.promote("clf", "v1.0.0", "production")
    reg.push()
    reg.close()
    assert _event_tags(bare) == ["refs/tags/uniflow/clf/production/4", "refs/tags/uniflow/clf/staging/3"]
    assert git(bare, "rev-parse", "refs/tags/uniflow/clf/production/4") == git(
        a, "rev-parse", "refs/tags/uniflow/clf/production/4"
    )
    assert git(bare, "cat-file", "-t", "uniflow/clf/production/4").strip() == "tag"


def test_a_crash_before_the_tag_is_repaired_by_the_next_push(tmp_path: Path) -> None:
    """SIGKILL right after the lifecycle CAS: the event is recorded, its tag is not; the next
    uniflow push creates it and sends it with the lifecycle."""
    bare, a, reg = _registry(tmp_path)
    reg.close()
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT), "UNIFLOW_TEST_KILL_AT": "after-lifecycle-cas"}
    code = "from uniflow import ModelRegistry; ModelRegistry('.').promote('clf', 'v1.0.0', 'production')"
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=a, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == -9, r.stderr
    assert "promote clf v1.0.0" in git(a, "log", "-1", "--format=%s", "refs/uniflow/models/clf")
    assert _event_tags(a) == []
    cli(a, "push")
    assert _event_tags(a) == ["refs/tags/uniflow/clf/production/3"]
    assert _event_tags(bare) == ["refs/tags/uniflow/clf/production/3"]


def test_a_tag_a_replayed_event_left_is_not_pushed(tmp_path: Path) -> None:
    """Two clones promote concurrently: b's event is replayed after a's by pull (new seq).
    b's old tag for seq 3 names another event than the remote's seq 3: it is never sent, and
    the replayed event gets the tag of its new seq."""
    from uniflow import PushRejectedError

    bare, a, reg = _registry(tmp_path)
    reg.push()
    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(bare), str(b))
    rb = open_registry(b)
    rb.pull()  # the lifecycle as it was: two registers
    reg.promote("clf", "v1.0.0", "production")  # seq 3 on a
    reg.push()
    reg.close()
    rb.promote("clf", "v1.1.0", "staging")  # seq 3 on b too, concurrently
    assert _event_tags(b) == ["refs/tags/uniflow/clf/staging/3"]
    with pytest.raises(PushRejectedError):
        rb.push()
    rb.pull()  # replays b's promotion after a's: seq 4
    rb.push()
    rb.close()
    assert _event_tags(bare) == ["refs/tags/uniflow/clf/production/3", "refs/tags/uniflow/clf/staging/4"]
    shown = json.loads(cli(b, "events", "show", "uniflow/clf/staging/4").stdout)
    assert shown["version"] == "v1.1.0" and shown["seq"] == 4
    r = cli(b, "events", "show", "uniflow/clf/staging/3", code=5)  # the stale local tag
    assert r.stderr.count("\n") == 1


def test_pre_push_hook_uploads_the_version_an_event_tag_names(tmp_path: Path) -> None:
    from uniflow.sharing.hooks import run_pre_push

    _bare, a, reg = _registry(tmp_path)
    reg.promote("clf", "v1.0.0", "production")
    ref = "refs/tags/uniflow/clf/production/3"
    sha = git(a, "rev-parse", ref).strip()
    report = run_pre_push(reg.repository, "origin", [f"{ref} {sha} {ref} {'0' * 40}"])
    reg.close()
    assert report["versions"] == ["clf/v1.0.0"]
    assert report["chunks"]["wanted"] == 2 and report["chunks"]["transferred"] == 2
    assert len(remote_chunks(tmp_path / "blobs")) == 2


# ---------------------------------------------------------------------- uniflow events
def test_events_lists_stage_moves_from_the_lifecycle(tmp_path: Path) -> None:
    _bare, a, reg = _registry(tmp_path, config="")  # tags off: the lifecycle is the source
    reg.promote("clf", "v1.0.0", "production")
    reg.promote("clf", "v1.1.0", "production")
    reg.close()
    rows = json.loads(cli(a, "events", "--json").stdout)
    assert [(r["seq"], r["version"], r["stage"], r["action"], r["tag"]) for r in rows] == [
        (3, "v1.0.0", "production", "promote", "uniflow/clf/production/3"),
        (4, "v1.1.0", "production", "promote", "uniflow/clf/production/4"),
    ]
    since = json.loads(cli(a, "events", "clf", "--since", "3", "--json").stdout)
    assert [r["seq"] for r in since] == [4]
    assert json.loads(cli(a, "events", "--since", rows[1]["time"], "--json").stdout)[0]["seq"] == 4
    assert json.loads(cli(a, "events", "--since", "2999-01-01T00:00:00Z", "--json").stdout) == []
    table = cli(a, "events", "clf").stdout
    assert "uniflow/clf/production/4" in table and "v1.1.0" in table
    r = cli(a, "events", "--since", "yesterday", code=2)
    assert r.stderr.count("\n") == 1 and "--since" in r.stderr
    r = cli(a, "events", "nope", code=3)
    assert r.stderr.count("\n") == 1


def test_events_show_prints_the_event_a_ci_ref_names(tmp_path: Path) -> None:
    _bare, a, reg = _registry(tmp_path)
    reg.promote("clf", "v1.0.0", "production")
    reg.close()
    for ref in ("refs/tags/uniflow/clf/production/3", "uniflow/clf/production/3"):
        out = json.loads(cli(a, "events", "show", ref).stdout)
        assert {k: out[k] for k in ("model", "version", "stage", "seq", "action")} == {
            "model": "clf", "version": "v1.0.0", "stage": "production", "seq": 3, "action": "promote"
        }  # fmt: skip
        assert out["actor"] and out["time"]
    # a CI checkout with the tag but not the lifecycle reads the tag alone
    ci = tmp_path / "ci"
    git(tmp_path, "init", "-q", str(ci))
    git(ci, "fetch", "-q", str(a), "refs/tags/uniflow/clf/production/3:refs/tags/uniflow/clf/production/3")
    assert (
        json.loads(cli(ci, "events", "show", "refs/tags/uniflow/clf/production/3").stdout)["version"]
        == "v1.0.0"
    )


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("refs/heads/main", 2),
        ("refs/tags/models/clf/v1.0.0", 2),
        ("refs/tags/uniflow/clf/production/03", 2),
        ("refs/tags/uniflow/clf/production/x", 2),
        ("refs/tags/uniflow/Clf/production/3", 2),
        ("refs/tags/uniflow/clf/production/3/4", 2),
        ("refs/tags/uniflow/clf/production/99", 3),  # names nothing
        ("refs/tags/uniflow/clf/staging/3", 3),  # event 3 moved to production
    ],
)
def test_events_show_refuses_a_bad_ref_in_one_line(tmp_path: Path, ref: str, code: int) -> None:
    _bare, a, reg = _registry(tmp_path)
    reg.promote("clf", "v1.0.0", "production")
    reg.close()
    r = cli(a, "events", "show", ref, code=code)
    assert r.stdout == "" and r.stderr.count("\n") == 1 and r.stderr.startswith("error:")


def test_events_show_refuses_a_forged_tag(tmp_path: Path) -> None:
    _bare, a, reg = _registry(tmp_path)
    reg.promote("clf", "v1.0.0", "production")
    reg.close()
    ci = tmp_path / "ci"  # no lifecycle here: only the tag speaks
    git(tmp_path, "init", "-q", str(ci))
    git(ci, "fetch", "-q", str(a), "refs/tags/models/clf/v1.0.0:refs/tags/models/clf/v1.0.0")
    git(ci, "tag", "uniflow/clf/production/7", "models/clf/v1.0.0^{commit}")  # lightweight
    r = cli(ci, "events", "show", "uniflow/clf/production/7", code=5)
    assert r.stderr.count("\n") == 1
    git(
        ci,
        "tag",
        "-a",
        "-m",
        '{"format": 1, "model": "clf"}',
        "uniflow/clf/production/8",
        "models/clf/v1.0.0^{commit}",
    )
    assert cli(ci, "events", "show", "uniflow/clf/production/8", code=5).stderr.count("\n") == 1
    # a well-formed record under another tag's name
    body = json.loads(git(a, "cat-file", "-p", "uniflow/clf/production/3").partition("\n\n")[2])
    git(ci, "tag", "-a", "-m", json.dumps(body), "uniflow/clf/production/9", "models/clf/v1.0.0^{commit}")
    r = cli(ci, "events", "show", "uniflow/clf/production/9", code=5)
    assert "another event" in r.stderr
    # in the clone, a tag that disagrees with the lifecycle's event of that seq
    body["version"] = "v1.1.0"
    git(
        a, "tag", "-f", "-a", "-m", json.dumps(body), "uniflow/clf/production/3", "models/clf/v1.1.0^{commit}"
    )
    r = cli(a, "events", "show", "uniflow/clf/production/3", code=5)
    assert "disagrees" in r.stderr and r.stderr.count("\n") == 1


def test_the_python_api_lists_and_shows_events(tmp_path: Path) -> None:
    from uniflow import UsageError

    _bare, _a, reg = _registry(tmp_path)
    reg.promote("clf", "v1.0.0", "production")
    assert [e.tag for e in reg.events("clf")] == ["uniflow/clf/production/3"]
    assert reg.event("refs/tags/uniflow/clf/production/3").version == "v1.0.0"
    assert reg.events(since=3) == []
    with pytest.raises(UsageError):
        reg.event("uniflow/clf@production")
    reg.close()


def test_a_tag_that_cannot_be_written_is_a_warning_and_push_writes_it(tmp_path: Path) -> None:
    """The promotion is recorded either way: a tag write failing afterwards (here a file
    where its directory must go) warns in one line instead of failing the promotion."""
    bare, a, reg = _registry(tmp_path)
    reg.close()
    blocker = a / ".git" / "refs" / "tags" / "uniflow" / "clf"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    r = cli(a, "models", "promote", "clf", "v1.0.0", "--to", "production")
    assert (
        r.stderr.startswith("warning:")
        and "uniflow/clf/production/3" in r.stderr
        and r.stderr.count("\n") == 1
    )
    assert json.loads(cli(a, "events", "--json").stdout)[0]["seq"] == 3  # recorded
    blocker.unlink()
    cli(a, "push")
    assert _event_tags(bare) == ["refs/tags/uniflow/clf/production/3"]
