#!/usr/bin/env python3
"""Draw the benchmark figures from benchmarks/run.py JSON into docs/benchmarks/*.png.

Usage::

    python -m benchmarks.plot RESULTS.json [SCALING.json] [--out docs/benchmarks]

RESULTS.json is a run (ideally with --peers); SCALING.json one with --scaling (the scaling
data may also be inside RESULTS.json). Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_vs_peers(data: dict[str, Any], out: Path) -> list[Path]:
    plt = _plt()
    made = []
    groups = [
        (
            "register_1g.png",
            "Storing a 1 GiB safetensors file (s, lower is better)",
            [
                ("cat > /dev/null", "cat_1g"),
                ("cp + fsync", "cp_fsync_1g"),
                ("uniflow register", "register_1g"),
                ("uniflow register\n(same bytes again)", "register_1g_again"),
                ("dvc add", "dvc_add_1g"),
                ("mlflow log +\nregister", "mlflow_log_register_1g"),
            ],
        ),
        (
            "load_1g.png",
            "Loading 1 GiB by stage, every byte read (s, lower is better)",
            [
                ("cat > /dev/null", "cat_1g"),
                ("uniflow load\n(first, verified)", "load_1g_verified"),
                ("uniflow load\n(cached, verified)", "load_1g_cached"),
            ],
        ),
        (
            "cli.png",
            "Whole-process wall time (s, lower is better)",
            [
                ("uniflow --version", "version_cli"),
                ("import mlflow", "mlflow_import"),
                ("uniflow models list\n100 x 100", "list_100x100"),
                ("gto show\n1,000 tags", "gto_show_1000"),
            ],
        ),
    ]
    for fname, title, items in groups:
        labels = [lab for lab, key in items if isinstance(data.get(key), (int, float))]
        values = [data[key] for _lab, key in items if isinstance(data.get(key), (int, float))]
        if not values:
            continue
        fig, ax = plt.subplots(figsize=(8, 3.6))
        colors = ["#4c72b0" if "uniflow" in lab else "#999999" for lab in labels]
        bars = ax.barh(labels, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.bar_label(bars, labels=[f"{v:.2f} s" for v in values], padding=3, fontsize=8)
        ax.set_xlim(0, max(values) * 1.2)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    # dedup
    dd = [
        ("head tensor changed", "head_change_new_bytes_pct"),
        ("header shifted", "header_shift_new_bytes_pct"),
    ]
    if all(isinstance(data.get(k), (int, float)) for _l, k in dd):
        fig, ax = plt.subplots(figsize=(8, 2.8))
        labels = [f"uniflow: {lab}" for lab, _k in dd] + [
            "DVC / MLflow (store the whole\nfile again; not measured)"
        ]
        values = [data[k] for _l, k in dd] + [100.0]
        bars = ax.barh(labels, values, color=["#4c72b0", "#4c72b0", "#999999"])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 2, 600)
        ax.set_title("New bytes stored for v2 of a 1 GiB file (% of file size, log scale)")
        ax.bar_label(bars, labels=[f"{v:.2f} %" for v in values], padding=3, fontsize=8)
        fig.tight_layout()
        path = out / "dedup.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def scaling(sc: dict[str, Any], out: Path) -> list[Path]:
    plt = _plt()
    made = []
    rows = sc.get("by_size") or []
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4))
        x = [r["size_mib"] for r in rows]
        for key, label, style in (
            ("register", "uniflow register", "o-"),
            ("load_verified", "uniflow load (verified)", "s-"),
            ("cp_fsync", "cp + fsync", "x--"),
            ("cat", "cat > /dev/null", "+--"),
        ):
            ax.plot(x, [r[key] for r in rows], style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("model file size (MiB)")
        ax.set_ylabel("seconds")
        ax.set_title("Time versus model size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / "scaling_size.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    rows = sc.get("by_versions") or []
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4))
        x = [r["versions"] for r in rows]
        ax.plot(x, [r["list_name"] for r in rows], "o-", label="uniflow models list NAME")
        ax.plot(x, [r["list"] for r in rows], "s-", label="uniflow models list")
        ax.axhline(0.3, color="#c44e52", ls=":", label="goal 0.3 s")
        ax.set_xscale("log")
        ax.set_xlabel("versions of one model")
        ax.set_ylabel("seconds (whole process)")
        ax.set_title("CLI listing time versus number of versions")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / "scaling_versions.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


ROWS = [
    # (figure, key, unit, ratio key, ratio label)
    ("`cat FILE > /dev/null` (warm cache)", "cat_1g", "s", None, None),
    ("`cp` + fsync, same filesystem", "cp_fsync_1g", "s", None, None),
    ("BLAKE3 of the file on both cores (the hash limit)", "hash_1g", "s", None, None),
    ("register 1 GiB (durable)", "register_1g", "s", "register_1g_vs_cp_fsync", "x cp+fsync"),
    (
        "register the same bytes again",
        "register_1g_again",
        "s",
        "register_1g_again_vs_cp_fsync",
        "x cp+fsync",
    ),
    ("load by stage, verified, first load", "load_1g_verified", "s", "load_vs_hash", "x hash limit"),
    ("load by stage, verified, cached", "load_1g_cached", "s", "load_cached_vs_hash", "x hash limit"),
    ("v2 with the head tensor changed: new bytes", "head_change_new_bytes_pct", "%", None, None),
    ("re-save with a shifted header: new bytes", "header_shift_new_bytes_pct", "%", None, None),
    (
        "`uniflow models list`, 100 x 100",
        "list_100x100",
        "s",
        "gto_show_1000_vs_list_100x100",
        "gto show / this",
    ),
    ("`uniflow models list NAME`, 100 versions", "list_versions_cli", "s", None, None),
    ("`uniflow --version`", "version_cli", "s", "mlflow_import_vs_version_cli", "import mlflow / this"),
    ("`python -c 'import uniflow'`", "import_uniflow_process", "s", None, None),
    ("promote, in process", "promote_ms", "ms", None, None),
    ("`dvc add` 1 GiB", "dvc_add_1g", "s", "dvc_add_vs_register", "/ register"),
    ("`dvc add` + sync", "dvc_add_1g_plus_sync", "s", "dvc_add_sync_vs_register", "/ register"),
    (
        "MLflow log artifact + register version",
        "mlflow_log_register_1g",
        "s",
        "mlflow_log_register_vs_register",
        "/ register",
    ),
    ("MLflow log + register + sync", "mlflow_log_register_1g_plus_sync", "s", None, None),
    ("`python -c 'import mlflow'`", "mlflow_import", "s", None, None),
    ("`gto show`, 1,000 tags", "gto_show_1000", "s", None, None),
]


def markdown(data: dict[str, Any]) -> str:
    def num(v: Any) -> str:
        if not isinstance(v, (int, float)):
            return "n/a"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"

    lines = ["| figure | median | samples | ratio |", "| --- | ---: | --- | --- |"]
    for label, key, unit, rkey, rlabel in ROWS:
        if key not in data:
            continue
        samples = data.get("samples", {}).get(key) or []
        ratio = f"{num(data.get(rkey))} {rlabel}" if rkey else ""
        shown = ", ".join(num(x) for x in samples[:5]) + (
            f" … ({len(samples)} runs)" if len(samples) > 5 else ""
        )
        lines.append(f"| {label} | {num(data[key])} {unit} | {shown} | {ratio} |")
    lines += ["", "| goal (DESIGN section 6) | value | result |", "| --- | ---: | --- |"]
    for g in data.get("goals", {}).values():
        res = {True: "pass", False: "**fail**", None: "not measured"}[g["pass"]]
        lines.append(f"| {g['text']} | {num(g['value'])} | {res} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("scaling", type=Path, nargs="?")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    ap.add_argument("--markdown", action="store_true", help="print the results as Markdown tables instead")
    args = ap.parse_args(argv)
    data = json.loads(args.results.read_text())
    if args.markdown:
        print(markdown(data))
        return 0
    sc = data.get("scaling") or {}
    if args.scaling:
        sc = json.loads(args.scaling.read_text()).get("scaling") or sc
    args.out.mkdir(parents=True, exist_ok=True)
    made = bar_vs_peers(data, args.out) + scaling(sc, args.out)
    for p in made:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
