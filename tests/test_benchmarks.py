"""The benchmark script runs end to end in --smoke mode and reports every non-peer figure.

No timing is asserted anywhere: the numbers belong to docs/benchmarks.md, not to the tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import benchmark_smoke, numeric

pytestmark = pytest.mark.slow  # runs the benchmark script: skipped by the fast run (pytest -m 'not slow')


NON_PEER_KEYS = [
    "cp_fsync_1g",
    "cat_1g",
    "hash_1g",
    "register_1g",
    "register_1g_again",
    "load_1g_verified",
    "head_change_new_bytes_pct",
    "header_shift_new_bytes_pct",
    "list_100x100",
    "version_cli",
    "promote_ms",
    "cp_1g",
    "get_1g",
    "get_1g_cached",
    "resolve_ms",
    "ui_overview_ms",
    "ui_model_page_ms",
    "register_tensor_overhead_pct",
    "diff_1g_ms",
    "diff_1g_cli",
    "partial_load_head_ms",
    "full_load_1g_ms",
    "partial_load_head_remote_ms",
    "partial_load_head_fetched_bytes",
    # benchmarks/transfer.py: push/pull through a directory remote and moto's S3 server
    "xfer_dir_uniflow_push_full",
    "xfer_dir_uniflow_push_v2",
    "xfer_dir_uniflow_pull_full",
    "xfer_dir_uniflow_pull_v2",
    "xfer_s3_uniflow_push_full",
    "xfer_s3_uniflow_push_v2",
    "xfer_s3_uniflow_pull_full",
    "xfer_s3_uniflow_pull_v2",
    "xfer_dir_uniflow_push_v2_bytes",
    "xfer_s3_uniflow_push_v2_bytes",
    "xfer_s3_uniflow_push_full_requests",
    "xfer_s3_uniflow_pull_full_requests",
    "xfer_s3_uniflow_push_full_requests_per_gib",
    # benchmarks/stream.py
    "save_fsync_state_dict_1g",
    "register_state_dict_1g",
    "register_state_dict_tmpfile_1g",
    "save_fsync_state_dict_cpu",
    "register_state_dict_cpu",
    "register_state_dict_tmpfile_cpu",
    # benchmarks/listing.py
    "list_name_10k",
    "list_name_10k_cpu",
    "list_name_10k_packed",
    "list_name_10k_cold",
    "list_name_json_10k",
    "list_name_json_10k_cpu",
    "list_name_100k",
    "list_name_100k_cpu",
    "list_name_100k_packed",
    "list_name_100k_anon_peak_kib",
    "list_name_json_100k",
    "list_name_json_100k_cpu",
    "list_1000x100",
    "list_1000x100_cpu",
    "list_1000x100_packed",
    # benchmarks/authority.py: a signed lifecycle verified, a promote signed
    "verify_10k_events_s",
    "verify_10k_events_min_s",
    "verify_10k_events_cpu_s",
    "verify_10k_events_warm_s",
    "verify_10k_events_packed_s",
    "verify_10k_floor_s",
    "verify_10k_floor_2t_s",
    "promote_unsigned_ms",
    "promote_signed_ms",
    "promote_sign_overhead_ms",
    "promote_sign_overhead_min_ms",
    # benchmarks/consume.py: get --require-signed against the same get unverified
    "get_require_signed_ratio",
    "get_require_signed_ratio_min",
    "get_require_signed_ratio_warm",
    "get_verified_cold_s",
    "get_unverified_cold_s",
    "get_verified_warm_s",
    "get_unverified_warm_s",
    # benchmarks/memory.py
    "mem_import_mib",
    "mem_register_1g_mib",
    "mem_register_4g_mib",
    "mem_load_1g_mib",
    "mem_load_4g_mib",
    "mem_export_1g_mib",
    "mem_register_sd_1g_extra_mib",
    "mem_load_sd_1g_extra_mib",
    "mem_get_1g_mib",
    "mem_clone_load_1g_mib",
    "mem_calibration_error_mib",
]
RATIO_KEYS = [
    "register_1g_vs_cp_fsync",
    "register_1g_again_vs_cp_fsync",
    "load_vs_cat",
    "load_vs_hash",
    "load_cached_vs_hash",
    "get_1g_vs_cp",
    "partial_load_head_vs_full",
    "xfer_dir_push_v2_sent_pct",
    "xfer_s3_push_v2_sent_pct",
    "register_state_dict_vs_save_fsync",
    "register_state_dict_tmpfile_vs_save_fsync",
]
DERIVED_KEYS = ["mem_register_growth_mib", "mem_load_growth_mib", "mem_sampler_max_gap_ms"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return benchmark_smoke(tmp_path_factory.mktemp("bench"))


@pytest.mark.parametrize("key", NON_PEER_KEYS + RATIO_KEYS + DERIVED_KEYS)
def test_smoke_key_isnumeric(smoke: dict, key: str) -> None:
    assert key in smoke
    assert numeric(smoke[key]), f"{key} = {smoke[key]!r}: {smoke.get('notes', {}).get(key)}"


def test_smoke_keeps_samples(smoke: dict) -> None:
    for key in NON_PEER_KEYS:
        if key in (
            "head_change_new_bytes_pct",
            "header_shift_new_bytes_pct",
            "register_tensor_overhead_pct",
            "partial_load_head_fetched_bytes",
        ) or key.endswith(("_bytes", "_requests", "_per_gib", "_min_s", "_min_ms", "_ratio_min")):
            continue  # one measurement (or a ratio of medians), not a timing
        samples = smoke["samples"][key]
        assert samples and all(numeric(s) for s in samples), key


def test_smoke_reports_goals_and_machine(smoke: dict) -> None:
    goals = smoke["goals"]
    assert {
        "re-register vs cp+fsync",
        "register near the disk",
        "load vs hash limit",
        "load vs hash limit (cached)",
        "models list",
        "promote",
        "ui overview",
        "ui model page",
        "tensor digests",
        "diff",
        "diff CLI",
        "models list NAME 10k",
        "models list NAME 100k",
        "models list 1000x100",
        "register memory",
        "first load memory",
        "verify 10k events",
        "sign a promote",
        "get --require-signed",
    } <= set(goals)
    for goal in goals.values():
        assert goal["pass"] in (True, False, None)
    # retired by DESIGN section 6 (ill-posed): reported as ratios, never judged as goals
    assert not {"register vs dvc add", "load vs cat", "load vs cat (cached)"} & set(goals)
    machine = smoke["meta"]["machine"]
    assert machine["cores"] and machine["filesystem"]
    assert smoke["meta"]["mode"] == "smoke"


def test_smoke_skips_peers(smoke: dict) -> None:
    assert "dvc_add_1g" not in smoke
    assert "xfer_dir_dvc_push_full" not in smoke


def test_smoke_transfer_counts_what_crossed_the_wire(smoke: dict) -> None:
    """The fine-tune push sends only the new chunks; every S3 figure comes with its requests."""
    full, v2 = smoke["xfer_dir_uniflow_push_full_bytes"], smoke["xfer_dir_uniflow_push_v2_bytes"]
    assert 0 < v2 < full
    assert smoke["xfer_s3_uniflow_push_full_bytes"] == full
    # a pull reads the packs' chunk ranges and indexes, not their headers and trailers
    assert 0.99 * full <= smoke["xfer_s3_uniflow_pull_full_bytes"] <= full
    assert smoke["xfer_s3_uniflow_push_full_requests"] >= smoke["xfer_s3_uniflow_push_full_files"] > 0


def test_generated_file_is_what_safetensors_writes(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    from benchmarks import modelfile as bench

    lazy = bench.LazyTensors(1 << 20)
    ours = tmp_path / "ours.safetensors"
    bench.write_safetensors(ours, lazy.items())
    arrays = {name: np.frombuffer(t.tobytes(), dtype=np.float32).reshape(t.shape) for name, t in lazy.items()}
    ref = tmp_path / "ref.safetensors"
    st.save_file(arrays, str(ref))
    assert ours.read_bytes() == ref.read_bytes()
    assert len(st.load_file(str(ours))) == len(arrays) == 200
