"""``uniflow policy init``/``check`` on real repositories: the policy files committed on the
default branch with ``git commit -S`` (``gpg.format=ssh``, keys made by ``ssh-keygen``), the
chain verified from a first-seen or pinned trust root, shallow and detached CI checkouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, make_repo
from uniflow import ModelRegistry, NotFoundError, PolicyError
from uniflow._authority.policy import parse_policy
from uniflow._ops.policy import policy_in_force, signing_principals
from uniflow._records.git import GitRepo
from uniflow._records.policyfiles import read_policy_history, read_trust_root, trust_root_path

from .conftest import Key, git, make_key

ALICE, BOB, MALLORY = "alice@example.com", "bob@example.com", "mallory@example.com"


def policy_text(admins: list[str], releasers: list[str] | None = None) -> str:
    return (
        f"[admins]\nprincipals = {json.dumps(admins)}\n"
        f"[groups]\nreleasers = {json.dumps(releasers or admins)}\n"
        '[stages.production]\npromoters = ["releasers"]\nrequire_signed = true\n'
    )


def signers_text(*pairs: tuple[str, Key]) -> str:
    return "".join(f'{who} namespaces="git" {key.pub_line}\n' for who, key in pairs)


def commit(repo: Path, key: Key | None, message: str, files: dict[str, str] | None = None) -> str:
    """Write ``files`` (paths relative to the repository), and commit them signed with
    ``key`` as ``git commit -S`` does (None: unsigned); the new commit id."""
    for rel, text in (files or {}).items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        git(repo, "add", rel)
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingKey={key.path}"] if key is not None else []
    git(repo, *sign, "commit", "-q", "--allow-empty", *(["-S"] if key else []), "-m", message)
    return git(repo, "rev-parse", "HEAD").stdout.decode().strip()


def policy_files(
    admins: list[str], *pairs: tuple[str, Key], releasers: list[str] | None = None
) -> dict[str, str]:
    return {
        ".uniflow/policy.toml": policy_text(admins, releasers),
        ".uniflow/allowed_signers": signers_text(*pairs),
    }


@pytest.fixture
def keys(keydir: Path) -> dict[str, Key]:
    return {who: make_key(keydir, who.split("@")[0]) for who in (ALICE, BOB, MALLORY)}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def governed(repo: Path, keys: dict[str, Key]) -> tuple[Path, str]:
    """A repository whose policy (admin alice, releasers alice and mallory) alice committed signed."""
    files = policy_files([ALICE], (ALICE, keys[ALICE]), (MALLORY, keys[MALLORY]), releasers=[ALICE, MALLORY])
    return repo, commit(repo, keys[ALICE], "policy", files)


def check(repo: Path, *args: str, code: int = 0) -> Any:
    out = cli(repo, "policy", "check", "--json", *args, code=code)
    return json.loads(out.stdout) if code == 0 else {"stderr": out.stderr}


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# ---------------------------------------------------------------------- init, check, TOFU
def test_init_then_a_commit_signed_by_the_admin_puts_the_policy_in_force(
    repo: Path, keys: dict[str, Key]
) -> None:
    out = cli(repo, "policy", "init", "--admin", ALICE, "--key", str(keys[ALICE].pub_path))
    assert "git commit -S" in out.stdout and "uniflow policy check" in out.stdout
    signers = (repo / ".uniflow/allowed_signers").read_text()
    assert f'{ALICE} namespaces="git,uniflow-policy" {keys[ALICE].pub_line}' in signers
    parse_policy((repo / ".uniflow/policy.toml").read_bytes())
    git(repo, "add", ".uniflow")
    sha = commit(repo, keys[ALICE], "uniflow policy")
    # Git itself verifies the commit with the file init wrote
    git(repo, "config", "gpg.ssh.allowedSignersFile", str(repo / ".uniflow/allowed_signers"))
    assert git(repo, "verify-commit", sha, check=False).returncode == 0

    assert not trust_root_path(GitRepo(repo)).exists()
    text = cli(repo, "policy", "check").stdout
    assert f"policy in force: {sha[:12]}" in text and f"admins: {ALICE}" in text
    assert "trust on first use" in text and "recorded now" in text
    assert read_trust_root(GitRepo(repo)) == sha  # recorded on the first check
    assert "recorded in" in cli(repo, "policy", "check").stdout


def test_init_refuses_to_overwrite_and_bad_input_is_one_line(repo: Path, keys: dict[str, Key]) -> None:
    cli(repo, "policy", "init", "--admin", ALICE, "--key", keys[ALICE].pub_line)
    before = (repo / ".uniflow/policy.toml").read_bytes()
    err = cli(repo, "policy", "init", "--admin", BOB, code=2).stderr
    assert "already exists" in one_error_line(err)
    assert (repo / ".uniflow/policy.toml").read_bytes() == before
    other = make_repo(repo.parent / "other")
    assert "invalid admin principal" in one_error_line(
        cli(other, "policy", "init", "--admin", "not ok", code=10).stderr
    )
    bad_key = cli(other, "policy", "init", "--admin", ALICE, "--key", str(other / "nope.pub"), code=2).stderr
    assert "neither a public key line nor a readable file" in one_error_line(bad_key)
    assert not (other / ".uniflow/policy.toml").exists()


def test_init_takes_the_key_git_signs_with(repo: Path, keys: dict[str, Key]) -> None:
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "user.signingKey", str(keys[ALICE].pub_path))
    out = cli(repo, "policy", "init", "--admin", ALICE, "--json")
    assert json.loads(out.stdout)["key_source"] == "user.signingKey"
    assert keys[ALICE].pub_line.split()[1] in (repo / ".uniflow/allowed_signers").read_text()


def test_no_policy_and_unsigned_first_commit(repo: Path, keys: dict[str, Key]) -> None:
    err = cli(repo, "policy", "check", code=3).stderr
    assert "no .uniflow/policy.toml on refs/heads/main" in one_error_line(err)
    assert policy_in_force(ModelRegistry(repo).repository) is None


def test_json_shape(governed: tuple[Path, str]) -> None:
    repo, sha = governed
    data = check(repo)
    assert set(data) == {"keyless", "trust_root", "in_force", "revisions"}
    assert data["trust_root"] == {
        "kind": "first-seen",
        "commit": sha,
        "source": data["trust_root"]["source"],
    }
    in_force = data["in_force"]
    assert isinstance(in_force, dict) and in_force["commit"] == sha
    assert in_force["policy"]["admins"] == {"principals": [ALICE], "threshold": 1}
    assert data["revisions"] == [
        {
            "commit": sha,
            "accepted": True,
            "reason": data["revisions"][0]["reason"],
            "signers": [],
            "committed_by": [],
            "cosigned_by": [],
            "ignored_cosignatures": [],
        }
    ]
    assert data["keyless"] == []


# ---------------------------------------------------------------------- attacks and rotation
def test_attack_non_admin_grants_itself_rights_and_the_previous_policy_stays_in_force(
    governed: tuple[Path, str], keys: dict[str, Key]
) -> None:
    repo, first = governed
    check(repo)  # trust on first use records alice's policy
    grab = commit(
        repo,
        keys[MALLORY],
        "make me admin",
        {".uniflow/policy.toml": policy_text([ALICE, MALLORY], [ALICE, MALLORY])},
    )
    data = check(repo)
    assert data["in_force"]["commit"] == first
    verdict = data["revisions"][-1]
    assert verdict["commit"] == grab and not verdict["accepted"]
    assert f"{MALLORY} is not an admin" in verdict["reason"]
    # her own key under alice's name proves nothing: verified against the keys in force before it
    forged = signers_text((ALICE, keys[MALLORY]), (MALLORY, keys[MALLORY]))
    commit(repo, keys[MALLORY], "my key for alice", {".uniflow/allowed_signers": forged})
    unsigned = commit(repo, None, "unsigned", {".uniflow/policy.toml": policy_text([MALLORY])})
    data = check(repo)
    assert data["in_force"]["commit"] == first
    assert [v["accepted"] for v in data["revisions"]] == [True, False, False, False]
    assert data["revisions"][-1]["commit"] == unsigned
    assert "signed by no admin" in data["revisions"][-1]["reason"]
    text = cli(repo, "policy", "check")
    assert "REJECTED" in text.stdout and "did not take effect" in text.stderr


def test_admins_rotate_keys_and_hand_over_and_the_old_key_loses_its_rights(
    governed: tuple[Path, str], keys: dict[str, Key], keydir: Path
) -> None:
    repo, _ = governed
    new_alice = make_key(keydir, "alice-2026")
    # alice replaces her key: signed with the old key, which is in force before the change
    rotated = commit(
        repo,
        keys[ALICE],
        "rotate alice's key",
        {".uniflow/allowed_signers": signers_text((ALICE, new_alice))},
    )
    stale = commit(repo, keys[ALICE], "old key", {".uniflow/policy.toml": policy_text([ALICE, MALLORY])})
    fresh = commit(
        repo,
        new_alice,
        "bob takes over",
        policy_files([BOB], (ALICE, new_alice), (BOB, keys[BOB])),
    )
    by_alice = commit(repo, new_alice, "alice again", {".uniflow/policy.toml": policy_text([ALICE])})
    by_bob = commit(
        repo, keys[BOB], "bob adds a releaser", {".uniflow/policy.toml": policy_text([BOB], [BOB, ALICE])}
    )
    data = check(repo)
    verdicts = {v["commit"]: v for v in data["revisions"]}
    assert verdicts[rotated]["accepted"] and verdicts[rotated]["signers"] == [ALICE]
    assert not verdicts[stale]["accepted"]  # the old key is no longer in allowed_signers
    assert verdicts[fresh]["accepted"]
    assert (
        not verdicts[by_alice]["accepted"]
        and "alice@example.com is not an admin" in verdicts[by_alice]["reason"]
    )
    assert verdicts[by_bob]["accepted"] and verdicts[by_bob]["signers"] == [BOB]
    assert data["in_force"]["commit"] == by_bob


def test_a_merge_signed_by_an_admin_brings_a_change_made_on_a_branch(
    governed: tuple[Path, str], keys: dict[str, Key]
) -> None:
    repo, _ = governed
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, keys[MALLORY], "proposal", {".uniflow/policy.toml": policy_text([ALICE], [ALICE, BOB])})
    git(repo, "checkout", "-q", "main")
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingKey={keys[ALICE].path}"]
    git(repo, *sign, "merge", "-q", "--no-ff", "-S", "-m", "merge reviewed policy", "feature")
    merge = git(repo, "rev-parse", "HEAD").stdout.decode().strip()
    data = check(repo)
    assert data["in_force"]["commit"] == merge
    assert BOB in data["in_force"]["policy"]["groups"]["releasers"]


# ---------------------------------------------------------------------- trust roots
def test_a_history_rewrite_that_removes_the_first_seen_root_is_refused(
    governed: tuple[Path, str], keys: dict[str, Key]
) -> None:
    repo, first = governed
    check(repo)
    # the branch is replaced by a history whose first policy makes mallory the admin
    git(repo, "checkout", "-q", "--orphan", "rewritten")
    git(repo, "rm", "-rq", "--cached", ".")
    commit(repo, keys[MALLORY], "my policy", policy_files([MALLORY], (MALLORY, keys[MALLORY])))
    git(repo, "branch", "-f", "main", "rewritten")
    git(repo, "checkout", "-q", "main")
    err = one_error_line(check(repo, code=10)["stderr"])
    assert first[:12] in err and "rewritten" in err and "trust-root" in err
    assert read_trust_root(GitRepo(repo)) == first  # never replaced silently


def test_a_damaged_trust_root_record_is_one_line(governed: tuple[Path, str]) -> None:
    repo, _ = governed
    check(repo)
    path = trust_root_path(GitRepo(repo))
    path.chmod(0o644)
    path.write_text("not a commit\n")
    err = one_error_line(check(repo, code=5)["stderr"])
    assert "is not one commit id" in err


def test_trust_root_file_pins_the_admins(
    governed: tuple[Path, str], keys: dict[str, Key], tmp_path: Path
) -> None:
    repo, first = governed
    pinned = tmp_path / "admins"
    pinned.write_text(signers_text((ALICE, keys[ALICE])))
    data = check(repo, "--trust-root", str(pinned))
    assert data["trust_root"]["kind"] == "pinned" and data["trust_root"]["admins"] == [ALICE]
    assert data["in_force"]["commit"] == first
    assert not trust_root_path(GitRepo(repo)).exists()  # a pinned check records nothing
    # mallory's rewritten history, which trust on first use in a fresh clone would accept
    git(repo, "checkout", "-q", "--orphan", "rewritten")
    git(repo, "rm", "-rq", "--cached", ".")
    commit(repo, keys[MALLORY], "my policy", policy_files([MALLORY], (MALLORY, keys[MALLORY])))
    git(repo, "branch", "-f", "main", "rewritten")
    err = one_error_line(check(repo, "--trust-root", str(pinned), code=10)["stderr"])
    assert "no policy revision is signed by 1 of the trust root's admins" in err
    missing = one_error_line(check(repo, "--trust-root", str(tmp_path / "nope"), code=10)["stderr"])
    assert "cannot read allowed signers" in missing


# ---------------------------------------------------------------------- clones and CI checkouts
def test_shallow_clone_needs_unshallow_or_a_pinned_root(
    governed: tuple[Path, str], keys: dict[str, Key], tmp_path: Path
) -> None:
    repo, _ = governed
    commit(repo, None, "later code", {"train.py": "print('v2')\n"})
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", repo.as_uri(), str(shallow))
    history = read_policy_history(GitRepo(shallow))
    assert history.shallow and len(history.revisions) == 1
    err = one_error_line(check(shallow, code=10)["stderr"])
    assert "shallow" in err and "git fetch --unshallow" in err and "--trust-root" in err
    assert not trust_root_path(GitRepo(shallow)).exists()
    git(shallow, "fetch", "-q", "--unshallow")
    assert check(shallow)["in_force"]["commit"] == governed[1]


def test_detached_ci_checkout_reads_the_remote_default_branch(
    governed: tuple[Path, str], keys: dict[str, Key], tmp_path: Path
) -> None:
    repo, first = governed
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, keys[MALLORY], "unmerged proposal", {".uniflow/policy.toml": policy_text([MALLORY])})
    git(repo, "checkout", "-q", "main")
    ci = tmp_path / "ci"
    git(tmp_path, "clone", "-q", repo.as_uri(), str(ci))
    git(ci, "checkout", "-q", "--detach", "origin/feature")  # CI builds the branch, detached
    git(ci, "branch", "-D", "main")  # only refs/remotes/origin/main is left
    data = check(ci)
    assert data["in_force"]["commit"] == first
    assert "refs/remotes/origin/main" in data["trust_root"]["source"]
    # a detached checkout without any branch: HEAD's history is read
    bare = tmp_path / "bare-ci"
    git(tmp_path, "init", "-q", str(bare))
    git(bare, "fetch", "-q", repo.as_uri(), first)
    git(bare, "checkout", "-q", "--detach", "FETCH_HEAD")
    assert check(bare)["in_force"]["commit"] == first
    # the same checkout made with --depth: the history is not there
    shallow = tmp_path / "ci-shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", repo.as_uri(), str(shallow))
    git(shallow, "checkout", "-q", "--detach")
    assert "shallow" in one_error_line(check(shallow, code=10)["stderr"])


# ---------------------------------------------------------------------- the library side
def test_policy_in_force_and_the_signing_key_principals(
    governed: tuple[Path, str], keys: dict[str, Key]
) -> None:
    repo, first = governed
    registry = ModelRegistry(repo)
    chain = registry.policy_check()
    assert chain.in_force.commit == first
    in_force = policy_in_force(registry.repository)
    assert in_force is not None and in_force.commit == first
    assert policy_in_force(registry.repository, chain.in_force.committed_at.replace(year=2000)) is None
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "user.signingKey", str(keys[MALLORY].path))
    assert signing_principals(registry.repository) == (MALLORY,)
    git(repo, "config", "user.signingKey", str(keys[BOB].pub_path))
    assert signing_principals(registry.repository) == ()


def test_library_errors_are_uniflow_errors(repo: Path) -> None:
    registry = ModelRegistry(repo)
    with pytest.raises(NotFoundError):
        registry.policy_check()
    with pytest.raises(PolicyError):
        registry.policy_init("not ok")


def test_signatures_are_verified_on_the_stored_commit_bytes(governed: tuple[Path, str]) -> None:
    repo, first = governed
    raw = GitRepo(repo).read_raw(first, "commit", 1 << 20)
    assert raw == git(repo, "cat-file", "commit", first).stdout and b"\ngpgsig " in raw


def test_history_walk_keeps_only_commits_that_change_the_files_and_is_bounded(
    governed: tuple[Path, str], keys: dict[str, Key]
) -> None:
    repo, first = governed
    commit(repo, None, "code only", {"train.py": "print('v2')\n"})
    change = commit(repo, keys[ALICE], "policy", {".uniflow/policy.toml": policy_text([ALICE], [ALICE, BOB])})
    commit(repo, None, "more code", {"train.py": "print('v3')\n"})
    history = read_policy_history(GitRepo(repo))
    assert history.ref == "refs/heads/main" and not history.shallow
    assert [r.commit for r in history.revisions] == [first, change]
    with pytest.raises(PolicyError, match="longer than 3 commits"):
        read_policy_history(GitRepo(repo), max_commits=3)


def test_an_oversized_policy_file_is_refused_before_it_is_read(
    governed: tuple[Path, str], keys: dict[str, Key]
) -> None:
    repo, _ = governed
    huge = "# " + "x" * (1 << 20) + "\n"
    commit(repo, keys[MALLORY], "huge", {".uniflow/policy.toml": huge})
    err = one_error_line(check(repo, code=5)["stderr"])
    assert ".uniflow/policy.toml of commit" in err and "more than the policy file limit" in err


def test_a_rule_for_an_undeclared_stage_is_flagged_but_the_verdicts_do_not_depend_on_the_checkout(
    governed: tuple[Path, str], keys: dict[str, Key]
) -> None:
    repo, _ = governed
    typo = policy_text([ALICE]).replace("[stages.production]", "[stages.prodution]")
    change = commit(repo, keys[ALICE], "typo", {".uniflow/policy.toml": typo})
    out = cli(repo, "policy", "check")
    assert f"policy in force: {change[:12]}" in out.stdout
    assert "warning: the policy sets a rule for stage 'prodution', which is not declared" in out.stderr


def test_every_work_tree_shares_the_trust_root(governed: tuple[Path, str], tmp_path: Path) -> None:
    repo, first = governed
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked))
    assert check(linked)["trust_root"]["commit"] == first
    assert read_trust_root(GitRepo(repo)) == first  # recorded in the common Git directory
    assert "recorded in" in check(repo)["trust_root"]["source"]
