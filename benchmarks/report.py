"""What a run is judged against and how it is printed: the goals of DESIGN section 6 (each
benchmark module adds its own), the ratios computed from the figures, the machine's
description, and the table printed at the end.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from benchmarks import authority, consume, listing, memory, remote, round3, stream, transfer
from benchmarks.commands import UI_KEYS
from benchmarks.harness import Results, run

HERE = Path(__file__).resolve().parent

CORE_KEYS = [
    "cp_fsync_1g",
    "cat_1g",
    "register_1g",
    "register_1g_again",
    "load_1g_verified",
    "head_change_new_bytes_pct",
    "header_shift_new_bytes_pct",
    "list_100x100",
    "version_cli",
    "promote_ms",
]
TENSOR_TABLE_KEYS = [
    "register_1g_tensors",
    "register_1g_no_tensors",
    "register_tensor_overhead_pct",
    "register_tensor_overhead_paired_pct",
    "register_again_tensors",
    "register_again_no_tensors",
    "register_again_tensor_overhead_pct",
    "register_cpu_tensors",
    "register_cpu_no_tensors",
    "register_cpu_tensor_overhead_pct",
    "diff_1g_ms",
    "diff_1g_cli",
    "partial_load_head_ms",
    "full_load_1g_ms",
    "partial_load_head_vs_full",
    "partial_load_head_remote_ms",
    "full_load_1g_remote_ms",
    "partial_load_head_fetched_bytes",
    "partial_load_head_fetched_pct",
]
PEER_KEYS = ["dvc_add_1g", "gto_show_1000", "mlflow_log_register_1g", "mlflow_import"]

# Round 1 as DESIGN section 6 keeps it. Two of its first goals were ill-posed and are retired
# there: ">= 4x faster than dvc add" (DVC does not fsync; `dvc_add_sync_vs_register`, the
# durable comparison, is reported without a goal) and "verified load <= 2.5x cat" (a page-cache
# cat is faster than BLAKE3 can hash on 2 cores): verified loads are judged against the hash
# limit measured in the same run (`hash_1g`), with the same factor. "register <= 1.4x cp +
# fsync" gave way to round 2's 1.2x (benchmarks/stream.py); the re-register goal is 1.0x.
GOALS = [
    # (name, key, op, threshold, text)
    (
        "re-register vs cp+fsync",
        "register_1g_again_vs_cp_fsync",
        "<=",
        1.0,
        "re-register 1 GiB (same bytes) <= 1.0x cp + fsync",
    ),
    ("head change dedup", "head_change_new_bytes_pct", "<=", 2.0, "new bytes <= 2% after a head change"),
    ("header shift dedup", "header_shift_new_bytes_pct", "<=", 5.0, "new bytes <= 5% after a header shift"),
    (
        "load vs hash limit",
        "load_vs_hash",
        "<=",
        2.5,
        "verified first load by stage <= 2.5x BLAKE3 of the bytes on both cores",
    ),
    (
        "load vs hash limit (cached)",
        "load_cached_vs_hash",
        "<=",
        2.5,
        "same, second load (materialized file cached)",
    ),
    ("models list", "list_100x100", "<=", 0.3, "`uniflow models list` 100x100 <= 0.3 s wall"),
    ("--version", "version_cli", "<=", 0.15, "`uniflow --version` <= 0.15 s wall"),
    (
        "import is light",
        "import_heavy_modules_count",
        "<=",
        0,
        "`import uniflow` loads no torch/sklearn/fsspec",
    ),
    ("promote", "promote_ms", "<=", 50.0, "promote <= 50 ms in process"),
    (
        "ui overview",
        "ui_overview_ms",
        "<=",
        200.0,
        "`uniflow ui` overview page 100x100 <= 200 ms server time",
    ),
    (
        "ui model page",
        "ui_model_page_ms",
        "<=",
        200.0,
        "`uniflow ui` model page (100 versions) <= 200 ms server time",
    ),
    *remote.GOALS,
    *authority.GOALS,
    *consume.GOALS,
    *transfer.GOALS,
    *stream.GOALS,
    *memory.GOALS,
    (
        "tensor digests",
        "register_tensor_overhead_pct",
        "<=",
        5.0,
        "per-tensor digests cost <= 5% of register",
    ),
    ("diff", "diff_1g_ms", "<=", 100.0, "diff of two 1 GiB versions <= 100 ms in process"),
    ("diff CLI", "diff_1g_cli", "<=", 0.3, "`uniflow models diff` of two 1 GiB versions <= 0.3 s wall"),
]
GOALS += listing.GOALS  # benchmarks/listing.py: models list NAME at 10k/100k, models list 1000x100
GOALS += round3.GOALS  # benchmarks/round3.py: issue 25's table (only when the section ran)


def machine_info(cache: Path) -> dict[str, Any]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    fs = run(["df", "-T", str(cache)], check=False).stdout.strip().splitlines()
    fstype = fs[-1].split()[1] if len(fs) > 1 else None
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "filesystem": fstype,
        "df": fs[-1] if fs else None,
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": run(["git", "--version"], check=False).stdout.strip(),
    }
    try:
        import uniflow

        info["uniflow"] = uniflow.__version__
        commit = run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], check=False)
        info["uniflow_commit"] = commit.stdout.strip() or None
        dirty = run(["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "uniflow"], check=False)
        info["uniflow_dirty"] = bool(dirty.stdout.strip())
    except Exception:  # noqa: BLE001
        info["uniflow"] = None
    return info


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def ratio(res: Results, key: str, num: str, den: str) -> None:
    a, b = res.get(num), res.get(den)
    res.values[key] = round(a / b, 4) if a is not None and b else None


def compute_ratios(res: Results) -> None:
    ratio(res, "register_1g_vs_cp_fsync", "register_1g", "cp_fsync_1g")
    ratio(res, "register_1g_again_vs_cp_fsync", "register_1g_again", "cp_fsync_1g")
    ratio(res, "load_vs_cat", "load_1g_verified", "cat_1g")
    ratio(res, "load_cached_vs_cat", "load_1g_cached", "cat_1g")
    ratio(res, "load_vs_hash", "load_1g_verified", "hash_1g")
    ratio(res, "load_cached_vs_hash", "load_1g_cached", "hash_1g")
    ratio(res, "dvc_add_vs_register", "dvc_add_1g", "register_1g")
    ratio(res, "dvc_add_sync_vs_register", "dvc_add_1g_plus_sync", "register_1g")
    ratio(res, "mlflow_log_register_vs_register", "mlflow_log_register_1g", "register_1g")
    ratio(res, "gto_show_1000_vs_list_100x100", "gto_show_1000", "list_100x100")
    ratio(res, "mlflow_import_vs_version_cli", "mlflow_import", "version_cli")
    remote.compute(res)
    transfer.compute(res)


def evaluate_goals(res: Results) -> list[dict[str, Any]]:
    out = []
    for name, key, op, thr, text in GOALS:
        if key.startswith("r3_") and key not in res.values:
            continue  # round3 did not run
        v = res.get(key)
        ok = None if v is None else (v <= thr if op == "<=" else v >= thr)
        out.append({"name": name, "key": key, "value": v, "goal": f"{op} {thr}", "pass": ok, "text": text})
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def print_table(res: Results, goals: list[dict[str, Any]]) -> None:
    keys = [
        *CORE_KEYS,
        "load_1g_cached",
        "register_dirty_mib_after",
        "list_versions_cli",
        "import_uniflow_s",
        "import_uniflow_process",
        *UI_KEYS,
        "ui_overview_first_ms",
        *TENSOR_TABLE_KEYS,
        *PEER_KEYS,
        *remote.REMOTE_KEYS,
        *authority.KEYS,
        *consume.KEYS,
        *memory.KEYS,
        "resolve_first_s",
        "dvc_get_1g",
        *transfer.TABLE_KEYS,
        *round3.KEYS,
    ]
    print(f"\n{'figure':<34} {'median':>10}  samples")
    for k in keys:
        if k not in res.values:
            continue
        s = res.samples.get(k)
        ss = ", ".join(fmt(x) for x in s) if s else ""
        print(f"{k:<34} {fmt(res.values[k]):>10}  {ss[:60]}")
        if res.values[k] is None and k in res.notes:
            print(f"{'':<34} {'':>10}  ({res.notes[k][:100]})")
    print("\nratios")
    for k in (
        "register_1g_vs_cp_fsync",
        "register_1g_again_vs_cp_fsync",
        "load_vs_cat",
        "load_cached_vs_cat",
        "load_vs_hash",
        "load_cached_vs_hash",
        "dvc_add_vs_register",
        "dvc_add_sync_vs_register",
        "mlflow_log_register_vs_register",
        "gto_show_1000_vs_list_100x100",
        "mlflow_import_vs_version_cli",
        "get_1g_vs_cp",
        "get_1g_vs_cp_fsync",
        "get_1g_cached_vs_cp",
        "dvc_get_vs_get",
        *transfer.RATIO_KEYS,
    ):
        print(f"  {k:<36} {fmt(res.values.get(k)):>8}")
    round3.print_rows(res)
    print("\ngoals (DESIGN section 6)")
    for g in goals:
        mark = {True: "PASS", False: "FAIL", None: "----"}[g["pass"]]
        print(f"  {mark}  {g['text']:<52} value {fmt(g['value'])}")
