"""``uniflow models diff NAME A B``: what changed inside a model, per file and per tensor
(a thin call of ``ModelRegistry.diff``; added to the ``models`` group by ``_models``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ._common import echo_json, get_registry, json_option, repo_option
from ._complete import complete_model, complete_version
from ._format import Cell, print_line, print_table

if TYPE_CHECKING:  # pragma: no cover
    from .._ops.diff import FileDelta, TensorDelta, VersionDiff

__all__ = ["diff_cmd"]

_STYLE = {"changed": "yellow", "reshaped": "magenta", "added": "green", "removed": "red", "unchanged": "dim"}


@click.command("diff")
@click.argument("name", shell_complete=complete_model)
@click.argument("a", shell_complete=complete_version)
@click.argument("b", shell_complete=complete_version)
@click.option(
    "--stats",
    is_flag=True,
    help="Also read the changed tensors of both versions (only those): max |d|, mean |d|, relative L2.",
)
@json_option
@repo_option
def diff_cmd(name: str, a: str, b: str, stats: bool, as_json: bool, repo: str | None) -> None:
    """Show what changed from version A to version B of NAME, per file and per tensor.

    Read from the two manifests alone (no chunk is read, unless --stats).
    \f
    Calls ModelRegistry.diff(NAME, A, B, stats=...).
    """
    result = get_registry(repo).diff(name, a, b, stats=stats)
    if as_json:
        echo_json(result)
        return
    print_diff(result)


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _row(t: TensorDelta, with_stats: bool) -> list[Any]:
    from .._format import human_size

    info = t.info
    dtype, shape = info.dtype, _shape(info.shape)
    if t.status == "reshaped" and t.a is not None:
        if t.a.dtype != info.dtype:
            dtype = f"{t.a.dtype} -> {dtype}"
        if t.a.shape != info.shape:
            shape = f"{_shape(t.a.shape)} -> {shape}"
    row: list[Any] = [
        t.name,
        Cell(t.status, _STYLE.get(t.status, "")),
        dtype,
        shape,
        human_size(info.nbytes, significant=True),
    ]
    if with_stats:
        s = t.stats or {}
        row += [_num(s.get("max_abs_diff")), _num(s.get("mean_abs_diff")), _num(s.get("rel_l2"))]
    return row


def _num(v: float | None) -> str:
    return "-" if v is None or v != v or v in (float("inf"), float("-inf")) else f"{v:.3g}"


def _file_line(f: FileDelta) -> None:
    parts: list[Cell | str] = [Cell(f.path, "bold")]
    if f.renamed_from:
        parts.append(f" (renamed from {f.renamed_from})")
    parts += ["  ", Cell(f.status, _STYLE.get(f.status, ""))]
    if f.note:
        parts.append(f"  ({f.note})")
    print_line(*parts)


def print_diff(diff: VersionDiff) -> None:
    """The human report: per file, the tensors that changed, then the unchanged ones counted."""
    print_line("Diff of ", Cell(diff.name, "bold"), f" {diff.a} -> {diff.b}")
    with_stats = any(t.stats is not None for f in diff.files for t in f.tensors or ())
    columns = ["Tensor", "Status", "Dtype", "Shape", "Size"]  # the first column never wraps
    if with_stats:
        columns += ["Max |d|", "Mean |d|", "Rel L2"]
    for f in diff.files:
        _file_line(f)
        shown = [t for t in f.tensors or () if t.status != "unchanged"]
        if shown:
            print_table(columns, [_row(t, with_stats) for t in shown], justify={4: "right"})
        same = len(f.tensors or ()) - len(shown)
        if same:
            print_line(Cell(f"  {same} unchanged tensor{'s' if same > 1 else ''}", "dim"))
    summary = diff.summary
    print_line(Cell(str(summary["line"]), "bold"))
