"""The round-3 section of the benchmark (issue 25's Numbers table) runs tiny, end to end, and
reports every row: goal, min, median and a verdict. No timing is asserted.
"""

from __future__ import annotations

import pytest

from tests.helpers import benchmark_smoke, numeric

pytestmark = pytest.mark.slow  # runs the benchmark script: skipped by the fast run (pytest -m 'not slow')


#: every row measured without --peers and --large (each has r3_<row> and r3_<row>_min)
MEASURED = [
    "register_file_vs_cp_fsync",
    "register_file_cpu_s_per_gib",
    "register_sd_vs_save_fsync",
    "tensor_identities_pct",
    "chunking_2v1",
    "chunking_2v1_file",
    "remote_files_after_push",
    "get_fresh_vs_cp_fsync",
    "get_warm_vs_cp_fsync",
    "get_warm_cpu_s",
    "get_warm_offline",
    "push_vs_cp_fsync",
    "push_finetune_pct",
    "partial_head_remote_pct",
    "mem_register_1g_mib",
    "mem_load_1g_mib",
    "floor_disk_vs_cp_fsync",
    "floor_disk_write_fsync_s",
    "floor_blake3_s",
    "floor_blake3_cpu_s_per_gib",
]
#: rows that need --peers / --large: reported as not measured, with the reason
NOT_MEASURED = {
    "push_dvc_vs_uniflow": "--peers",
    "mem_register_4g_mib": "--large",
    "mem_load_4g_mib": "--large",
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return benchmark_smoke(tmp_path_factory.mktemp("bench3"), "round3", timeout=300)


@pytest.mark.parametrize("row", MEASURED)
def test_every_row_has_min_and_median(smoke: dict, row: str) -> None:
    key = f"r3_{row}"
    note = smoke["notes"].get(key)
    assert numeric(smoke.get(key)), f"{key} = {smoke.get(key)!r}: {note}"
    assert numeric(smoke.get(f"{key}_min")), key
    assert smoke[f"{key}_min"] <= smoke[key]
    assert smoke["samples"][key] and all(numeric(s) for s in smoke["samples"][key])


def test_ratio_rows_are_pairs_of_the_same_run(smoke: dict) -> None:
    """A ratio row holds one ratio per interleaved round (--smoke: 2)."""
    pairs = smoke["meta"]["runs"]["pairs"]
    for row in ("register_file_vs_cp_fsync", "tensor_identities_pct", "chunking_2v1", "push_vs_cp_fsync"):
        assert len(smoke["samples"][f"r3_{row}"]) == pairs, row
        assert smoke["round3"][row]["pairs"] == pairs


def test_summary_gives_each_goal_a_verdict(smoke: dict) -> None:
    rows = smoke["round3"]
    from benchmarks.round3 import ROWS

    assert set(rows) == {r.key for r in ROWS}
    for key, r in rows.items():
        assert {"goal", "op", "min", "median", "max", "met", "floor", "blocked"} <= set(r), key
        assert isinstance(r["met"], bool), key
        if r["median"] is not None:
            expected = r["median"] <= r["goal"] if r["op"] == "<=" else r["median"] >= r["goal"]
            assert r["met"] == expected, key
    # rows judged against cp + fsync carry the machine's floor as a ratio to it
    assert numeric(rows["register_file_vs_cp_fsync"]["floor"])
    assert numeric(rows["register_sd_vs_save_fsync"]["floor"])
    assert {f"r3 {r.key}" for r in ROWS} <= set(smoke["goals"])


@pytest.mark.parametrize("row", sorted(NOT_MEASURED))
def test_rows_not_measured_say_why(smoke: dict, row: str) -> None:
    r = smoke["round3"][row]
    assert r["median"] is None and r["met"] is False
    assert NOT_MEASURED[row] in (r["note"] or "")


def test_a_warm_get_downloads_nothing(smoke: dict) -> None:
    """Not a timing: with the blob remote moved away, a second get still succeeds."""
    assert smoke["r3_get_warm_offline"] == 1.0


def test_size_takes_a_unit() -> None:
    from benchmarks.run import size_mib

    assert size_mib("64MiB") == 64
    assert size_mib("1GiB") == 1024
    assert size_mib("1g") == 1024
    assert size_mib("512") == 512
