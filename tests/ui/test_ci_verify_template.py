"""The GitHub template that verifies the registry on every push (hooks/ci/github-verify-registry.yml):
what it runs, least privilege, and the same real linters as the other templates (each first
shown to reject a broken copy). Its verify step run on real repositories is in
tests/authority/test_consume_push.py."""

from __future__ import annotations

import re
from pathlib import Path

from tests.ui._browser import ROOT
from tests.ui.test_ci_templates import PINNED, _load, _schema_check, _zizmor

VERIFY = ROOT / "hooks" / "ci" / "github-verify-registry.yml"


def test_verify_template_passes_the_github_workflow_schema(tmp_path: Path) -> None:
    broken = tmp_path / VERIFY.name
    text = VERIFY.read_text()
    assert "    runs-on: ubuntu-latest\n" in text
    broken.write_text(text.replace("    runs-on: ubuntu-latest\n", "    runs_on: ubuntu-latest\n"))
    assert _schema_check("vendor.github-workflows", broken).returncode != 0
    r = _schema_check("vendor.github-workflows", VERIFY)
    assert r.returncode == 0, r.stdout + r.stderr


def test_zizmor_finds_nothing_in_the_verify_template(tmp_path: Path) -> None:
    unpinned = tmp_path / VERIFY.name
    unpinned.write_text(re.sub(r"@[0-9a-f]{40}", "@v4", VERIFY.read_text()))
    assert {f["ident"] for f in _zizmor(unpinned)} >= {"unpinned-uses"}
    assert [f["ident"] for f in _zizmor(VERIFY)] == []
    assert [f["ident"] for f in _zizmor(VERIFY, "--no-ignores")] == []  # nothing hidden


def test_verify_template_reads_only_and_runs_on_every_ref_github_can_see() -> None:
    wf = _load(VERIFY)
    assert wf["permissions"] == {}
    assert {n: j["permissions"] for n, j in wf["jobs"].items()} == {"verify": {"contents": "read"}}
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as a boolean
    assert on["push"]["tags"] == ["models/**", "uniflow/**"] and "schedule" in on
    steps = wf["jobs"]["verify"]["steps"]
    checkout = next(s for s in steps if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert checkout["with"] == {"persist-credentials": False, "fetch-depth": 0}
    run = next(s["run"] for s in steps if s.get("name") == "Verify signatures")
    assert "uniflow verify --signatures" in run and "--trust-root" in run
    assert "secrets." not in VERIFY.read_text()
    uses = [line for line in VERIFY.read_text().splitlines() if re.match(r"^\s*-?\s*uses:", line)]
    assert uses and [u for u in uses if not PINNED.match(u)] == []
