"""The CI templates' optional job publishes ``uniflow ui --export`` (off by default)."""

from __future__ import annotations

import pytest

from tests.ui._browser import ROOT


def test_templates_have_an_optional_publish_job() -> None:
    yaml = pytest.importorskip("yaml")
    gh = yaml.safe_load((ROOT / "hooks" / "ci" / "github-actions.yml").read_text())
    job = gh["jobs"]["publish-ui"]
    assert "UNIFLOW_PUBLISH_UI" in job["if"]
    runs = " ".join(str(step.get("run", "")) for step in job["steps"])
    assert "uniflow ui --export site" in runs and "refs/uniflow/*" in runs
    gl = yaml.safe_load((ROOT / "hooks" / "ci" / "gitlab-ci.yml").read_text())
    assert "UNIFLOW_PUBLISH_UI" in gl["pages"]["rules"][0]["if"]
    assert "uniflow ui --export public" in gl["pages"]["script"]
