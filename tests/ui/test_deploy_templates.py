"""The deploy-on-promotion templates (hooks/ci/*-deploy-on-promotion.yml, issue 26 item 1):
their triggers match the tag a real promotion writes, least privilege, the linters the
other CI templates pass, and the GitHub job's script run against a real pushed promotion."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import git, model_dir, open_registry, shared_setup
from tests.ui._browser import ROOT
from tests.ui.test_ci_templates import (
    PINNED,
    TOKEN,
    _git_http,
    _load,
    _run_step,
    _schema_check,
    _zizmor,
)

GITHUB = ROOT / "hooks" / "ci" / "github-deploy-on-promotion.yml"
GITLAB = ROOT / "hooks" / "ci" / "gitlab-deploy-on-promotion.yml"


def github_glob(pattern: str, name: str) -> bool:
    """GitHub's filter pattern for branches and tags: ``*`` is any run of characters but
    ``/``, ``**`` any run at all, ``?`` one character but ``/`` (the rest of its syntax, ``+``
    ``[]`` ``!``, is not used by the templates and refused here)."""
    if re.search(r"[+\[\]!]", pattern):
        raise ValueError(f"pattern syntax not modelled: {pattern}")
    rx = "".join(
        ".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?" else re.escape(tok)
        for tok in re.findall(r"\*\*|\*|\?|[^*?]+", pattern)
    )
    return re.fullmatch(rx, name) is not None


def _gitlab_tag_regex() -> re.Pattern[str]:
    rule = _load(GITLAB)["uniflow-deploy"]["rules"][0]["if"]
    m = re.fullmatch(r"\$CI_COMMIT_TAG =~ /(.*)/", rule)
    assert m is not None, rule
    return re.compile(m.group(1).replace("\\/", "/"))


def _promoted(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """``(bare, clone, event tag names)`` after real promotions with event tags on, pushed."""
    blobs = tmp_path / "srv" / "blobs"  # beside the repository: readable through a local Git URL
    bare, a = shared_setup(tmp_path, blob_url=str(blobs), config_extra="[events]\ntags = true\n")
    reg = open_registry(a)
    reg.register(model=str(model_dir(tmp_path / "m1", 2, seed=1)), name="clf", version="v1.0.0")
    reg.register(model=str(model_dir(tmp_path / "m2", 2, seed=2)), name="clf", version="v1.1.0")
    reg.promote("clf", "v1.0.0", "staging")
    reg.promote("clf", "v1.0.0", "production")
    reg.archive("clf", "v1.1.0")
    reg.push()
    reg.close()
    tags = git(bare, "for-each-ref", "--format=%(refname:short)", "refs/tags").split()
    return bare, a, tags


def test_the_triggers_match_the_tag_a_real_promotion_writes(tmp_path: Path) -> None:
    _bare, _a, tags = _promoted(tmp_path)
    assert sorted(tags) == [
        "models/clf/v1.0.0",
        "models/clf/v1.1.0",
        "uniflow/clf/archived/5",
        "uniflow/clf/production/4",
        "uniflow/clf/staging/3",
    ]
    (pattern,) = _load(GITHUB)[True]["push"]["tags"]  # YAML 1.1 reads the key `on` as True
    assert [t for t in tags if github_glob(pattern, t)] == ["uniflow/clf/production/4"]
    gitlab = _gitlab_tag_regex()
    assert [t for t in tags if gitlab.fullmatch(t)] == ["uniflow/clf/production/4"]
    # a model whose name has dots, dashes and underscores still matches; a nested name cannot
    assert github_glob(pattern, "uniflow/my-model_2.1/production/17")
    assert gitlab.fullmatch("uniflow/my-model_2.1/production/17")
    assert not github_glob(pattern, "uniflow/a/b/production/1") and not gitlab.fullmatch(
        "uniflow/a/b/production/1"
    )


def test_github_deploy_template_reads_only() -> None:
    gh = _load(GITHUB)
    assert gh["permissions"] == {}
    assert {name: job["permissions"] for name, job in gh["jobs"].items()} == {"deploy": {"contents": "read"}}
    steps = gh["jobs"]["deploy"]["steps"]
    assert not [s for s in steps if "actions/checkout" in str(s.get("uses", ""))]  # read by URL
    assert [s["name"] for s in steps if "github.token" in str(s.get("env", {}))] == [
        "Get the promoted version"
    ]
    uses = [line for line in GITHUB.read_text().splitlines() if re.match(r"^\s*-?\s*uses:", line)]
    assert uses and [u for u in uses if not PINNED.match(u)] == []
    assert "${{" not in "".join(str(s.get("run", "")) for s in steps)  # nothing expanded into a script
    gl = _load(GITLAB)["uniflow-deploy"]
    assert gl["variables"] == {"GIT_STRATEGY": "none"}
    assert "CI_JOB_TOKEN" in " ".join(gl["script"]) and "@${CI_SERVER_HOST}" not in GITLAB.read_text()


@pytest.mark.parametrize(
    ("schema", "template", "break_it"),
    [
        ("vendor.github-workflows", GITHUB, ("    runs-on: ubuntu-latest\n", "    runs_on: ubuntu-latest\n")),
        ("vendor.gitlab-ci", GITLAB, ("  stage: deploy\n", "  stage: [deploy, 1]\n")),
    ],
)
def test_deploy_templates_pass_their_schema(
    tmp_path: Path, schema: str, template: Path, break_it: tuple[str, str]
) -> None:
    broken = tmp_path / template.name
    text = template.read_text()
    assert break_it[0] in text
    broken.write_text(text.replace(break_it[0], break_it[1]))
    assert _schema_check(schema, broken).returncode != 0
    r = _schema_check(schema, template)
    assert r.returncode == 0, r.stdout + r.stderr


def test_zizmor_finds_nothing_in_the_github_deploy_template(tmp_path: Path) -> None:
    unpinned = tmp_path / GITHUB.name
    unpinned.write_text(re.sub(r"@[0-9a-f]{40}", "@v4", GITHUB.read_text()))
    assert {f["ident"] for f in _zizmor(unpinned)} >= {"unpinned-uses"}
    assert [f["ident"] for f in _zizmor(GITHUB)] == []
    assert [f["ident"] for f in _zizmor(GITHUB, "--no-ignores")] == []  # nothing hidden


def _get_step() -> str:
    (step,) = [
        s for s in _load(GITHUB)["jobs"]["deploy"]["steps"] if s.get("name") == "Get the promoted version"
    ]
    return str(step["run"])


def test_the_github_job_gets_the_holder_the_tag_names(tmp_path: Path) -> None:
    """The step as the runner would run it, for $GITHUB_REF of the pushed production tag: the
    event read by URL, the holder's verified files in ./model, the outputs for the deploy."""
    bare, _a, _tags = _promoted(tmp_path)
    work = tmp_path / "job"
    work.mkdir()
    out = work / "github_output"
    env = {
        "GITHUB_SERVER_URL": bare.parent.as_uri(),  # a Git URL on this machine: its directory blob remote
        "GITHUB_REPOSITORY": bare.name.removesuffix(".git"),
        "GITHUB_REF": "refs/tags/uniflow/clf/production/4",
        "GITHUB_OUTPUT": str(out),
        "TOKEN": TOKEN,
        "UNIFLOW_CACHE_DIR": str(tmp_path / "cache"),
    }
    r = _run_step(_get_step(), work, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((work / "event.json").read_text())["version"] == "v1.0.0"
    assert out.read_text().split() == ["model=clf", "version=v1.0.0", "stage=production"]
    assert sorted(p.name for p in (work / "model").iterdir()) == sorted(
        p.name for p in (tmp_path / "m1").iterdir()
    )
    for p in (tmp_path / "m1").iterdir():
        assert (work / "model" / p.name).read_bytes() == p.read_bytes()
    # a ref that is no event tag fails the step in one line, before anything is fetched
    r = _run_step(_get_step(), work, {**env, "GITHUB_REF": "refs/tags/models/clf/v1.0.0"})
    assert r.returncode == 2 and r.stderr.count("error:") == 1


def test_the_github_job_reads_with_the_token_from_its_environment(tmp_path: Path) -> None:
    bare, _a, _tags = _promoted(tmp_path)
    git(bare, "config", "uploadpack.allowFilter", "true")  # as GitHub's servers
    work = tmp_path / "job"
    work.mkdir()
    with _git_http(bare.parent) as url:
        env = {
            "GITHUB_SERVER_URL": url,
            "GITHUB_REPOSITORY": bare.name.removesuffix(".git"),
            "GITHUB_REF": "refs/tags/uniflow/clf/production/4",
            "GITHUB_OUTPUT": str(work / "out"),
            "UNIFLOW_CACHE_DIR": str(tmp_path / "cache"),
        }
        refused = _run_step(_get_step(), work, {**env, "TOKEN": "wrong"})
        assert refused.returncode != 0 and not (work / "event.json").read_text()
        r = _run_step(_get_step(), work, {**env, "TOKEN": TOKEN})
    # the event was read over HTTP with the token; the directory blob remote the repository's
    # config names is refused for a server URL (a real one names an object store)
    assert (work / "event.json").read_text(), r.stderr
    assert json.loads((work / "event.json").read_text())["seq"] == 4, r.stderr
    assert "may not name a local directory" in r.stderr
