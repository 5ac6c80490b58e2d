"""The consume section of the benchmark (issue 24: ``get --require-signed`` <= 1.1x the same
get unverified) runs tiny, end to end: whole ``uniflow get`` processes in interleaved pairs,
cold and warm, judged on the cold ratio. No timing is asserted.
"""

from __future__ import annotations

import pytest

from tests.helpers import benchmark_smoke, numeric

pytestmark = pytest.mark.slow  # runs the benchmark script: skipped by the fast run (pytest -m 'not slow')


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return benchmark_smoke(tmp_path_factory.mktemp("bench-consume"), "consume", timeout=300)


def test_every_figure_is_measured(smoke: dict) -> None:
    from benchmarks.consume import KEYS

    for key in KEYS:
        assert numeric(smoke.get(key)), f"{key} = {smoke.get(key)!r}: {smoke['notes'].get(key)}"
    assert smoke["consume_events"] >= 9
    assert smoke["consume_model_mib"] > 1


def test_ratios_are_interleaved_pairs(smoke: dict) -> None:
    """Each ratio holds one value per round (--smoke: 2), the verified get over the unverified
    one of the same round; the goal's key is the median, ``_min`` the least."""
    pairs = smoke["meta"]["runs"]["pairs"]
    samples = smoke["samples"]
    for temp, suffix in (("cold", ""), ("warm", "_warm")):
        ratios = samples[f"get_require_signed_ratio{suffix}"]
        verified, unverified = samples[f"get_verified_{temp}_s"], samples[f"get_unverified_{temp}_s"]
        assert len(ratios) == len(verified) == len(unverified) == pairs
        for r, v, u in zip(ratios, verified, unverified, strict=True):
            assert r == pytest.approx(v / u, rel=1e-3)
        assert smoke[f"get_require_signed_ratio{suffix}_min"] == pytest.approx(min(ratios), rel=1e-4)
        assert min(ratios) <= smoke[f"get_require_signed_ratio{suffix}"] <= max(ratios)


def test_goal_is_judged_on_the_cold_ratio(smoke: dict) -> None:
    goal = smoke["goals"]["get --require-signed"]
    assert goal["key"] == "get_require_signed_ratio"
    assert goal["goal"] == "<= 1.1"
    assert goal["value"] == smoke["get_require_signed_ratio"]
    assert goal["pass"] is (smoke["get_require_signed_ratio"] <= 1.1)
