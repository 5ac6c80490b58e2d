"""Tensor-level diff from manifests alone (issue 12): what a reviewer of a fine-tune asks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import blake3
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as save_numpy

from tests._models import trained_sentiment_net
from tests.helpers import cli
from tests.tensors._util import fine_tune_head, tiny_lm
from uniflow import ModelRegistry, NotFoundError
from uniflow._storage.merkle import merkle_identity, range_identity


def _statuses(diff) -> dict[str, str]:
    return {t.name: t.status for f in diff.files for t in f.tensors or ()}


def _small_identity(data: bytes) -> str:
    """The identity of a tensor that is part of one chunk: one leaf, (BLAKE3 of its bytes, size)."""
    return merkle_identity([(blake3.blake3(data).digest(), len(data))])


def test_register_records_every_tensor_as_safetensors_reads_it(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """Name, dtype, shape, byte range and the identity of each tensor's bytes, recorded at
    register (manifest format 3), agree with the file as safetensors itself reads it."""
    registry.register(tiny_lm(), "lm", version="v1.0.0")
    m = registry.repository.manifest("lm", "v1.0.0")
    assert m.format == 3
    (entry,) = m.files
    path = Path(registry.load_path("lm", "v1.0.0")) / entry.path
    raw = path.read_bytes()
    with safe_open(str(path), "pt") as f:
        names = set(f.keys())
        for rec in entry.tensors:
            t = f.get_tensor(rec.name)
            assert t.shape == rec.shape and rec.dtype == "F32"
            assert raw[rec.begin : rec.end] == t.numpy().tobytes()
            assert rec.digest == range_identity(entry.chunks, rec.begin, rec.end, raw[rec.begin : rec.end])
    assert {t.name for t in entry.tensors} == names and len(names) == 19


def test_head_only_fine_tune_changes_exactly_the_head(registry: ModelRegistry) -> None:
    model = tiny_lm()
    registry.register(model, "lm", version="v1.0.0")
    registry.register(fine_tune_head(model), "lm", version="v1.1.0")
    diff = registry.diff("lm", "v1.0.0", "v1.1.0")
    statuses = _statuses(diff)
    assert {n for n, s in statuses.items() if s != "unchanged"} == {"head.weight", "head.bias"}
    assert {statuses["head.weight"], statuses["head.bias"]} == {"changed"}
    summary = diff.summary
    assert (summary["tensors"], summary["changed"], summary["unchanged"]) == (19, 2, 17)
    assert summary["changed_bytes"] == (4 * 256 + 4) * 4
    assert summary["line"] == "2 of 19 tensors changed (4.02 KiB of 16 MiB)"
    # listed first; the unchanged ones are counted, not listed, in the human report
    (f,) = diff.files
    assert [t.status for t in f.tensors][:2] == ["changed", "changed"] and f.status == "changed"
    text = str(diff)
    assert "head.weight" in text and "17 unchanged tensors" in text and "blocks.0" not in text


def test_a_new_tensor_that_shifts_the_header_is_one_added_the_rest_unchanged(registry: ModelRegistry) -> None:
    sd = trained_sentiment_net().state_dict()
    registry.register(dict(sd), "clf", version="v1.0.0")
    grown = {**sd, "adapter.with_a_rather_long_name_that_grows_the_json_header.weight": torch.ones(8, 8)}
    registry.register(grown, "clf", version="v1.1.0")
    diff = registry.diff("clf", "v1.0.0", "v1.1.0")
    statuses = _statuses(diff)
    assert statuses.pop("adapter.with_a_rather_long_name_that_grows_the_json_header.weight") == "added"
    assert set(statuses.values()) == {"unchanged"} and len(statuses) == 5
    # every byte offset moved, and still nothing but the new tensor is reported
    (f,) = diff.files
    moved = [t for t in f.tensors if t.status == "unchanged" and t.a.begin != t.b.begin]
    assert len(moved) == 5
    assert diff.summary["line"] == "1 of 6 tensors changed: 1 added (256 B of 517 KiB)"


def test_a_dtype_cast_a_resize_and_a_dropped_tensor(registry: ModelRegistry) -> None:
    sd = trained_sentiment_net().state_dict()
    registry.register(dict(sd), "clf", version="v1.0.0")
    changed = dict(sd)
    changed["hidden.weight"] = sd["hidden.weight"].half()  # a cast
    changed["head.weight"] = torch.zeros(3, 64)  # a new class
    del changed["hidden.bias"]
    registry.register(changed, "clf", version="v1.1.0")
    diff = registry.diff("clf", "v1.0.0", "v1.1.0")
    statuses = _statuses(diff)
    assert statuses == {
        "hidden.weight": "reshaped",
        "head.weight": "reshaped",
        "hidden.bias": "removed",
        "embed.weight": "unchanged",
        "head.bias": "unchanged",
    }
    by_name = {t["name"]: t for t in diff.to_dict()["files"][0]["tensors"]}
    assert by_name["hidden.weight"]["dtype"] == "F16" and by_name["hidden.weight"]["from"]["dtype"] == "F32"
    assert by_name["head.weight"]["shape"] == [3, 64] and by_name["head.weight"]["from"]["shape"] == [2, 64]
    assert by_name["hidden.bias"]["dtype"] == "F32" and by_name["hidden.bias"]["digest_b"] is None


def test_diff_reads_no_chunk(registry: ModelRegistry) -> None:
    """Manifests only: with every chunk gone from the store the diff is the same."""
    model = tiny_lm()
    registry.register(model, "lm", version="v1.0.0")
    registry.register(fine_tune_head(model), "lm", version="v1.1.0")
    before = registry.diff("lm", "v1.0.0", "v1.1.0").to_dict()
    shutil.rmtree(registry.store.root / "objects")
    shutil.rmtree(registry.store.root / "packs")
    assert registry.diff("lm", "v1.0.0", "v1.1.0").to_dict() == before


def test_stats_read_the_changed_tensors_and_agree_with_numpy(registry: ModelRegistry) -> None:
    model = trained_sentiment_net()
    registry.register(model, "clf", version="v1.0.0")
    old = model.head.weight.detach().clone().numpy().astype(np.float64)
    with torch.no_grad():
        model.head.weight.mul_(1.5)
    registry.register(model, "clf", version="v1.1.0")
    diff = registry.diff("clf", "v1.0.0", "v1.1.0", stats=True)
    (t,) = [t for f in diff.files for t in f.tensors if t.status != "unchanged"]
    new = model.head.weight.detach().numpy().astype(np.float64)
    assert t.stats["max_abs_diff"] == pytest.approx(np.abs(new - old).max(), rel=1e-6)
    assert t.stats["mean_abs_diff"] == pytest.approx(np.abs(new - old).mean(), rel=1e-6)
    assert t.stats["rel_l2"] == pytest.approx(0.5, rel=1e-5)
    assert all(u.stats is None for f in diff.files for u in f.tensors if u.status == "unchanged")


def test_npy_arrays_are_diffed_too(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.register(np.arange(12, dtype=np.float32).reshape(3, 4), "arr", version="v1.0.0")
    registry.register(np.arange(12, dtype=np.float32).reshape(3, 4) + 1, "arr", version="v1.1.0")
    registry.register(np.arange(12, dtype=np.float64).reshape(4, 3), "arr", version="v1.2.0")
    assert _statuses(registry.diff("arr", "v1.0.0", "v1.1.0")) == {"array": "changed"}
    assert _statuses(registry.diff("arr", "v1.0.0", "v1.2.0")) == {"array": "reshaped"}
    (entry,) = registry.repository.manifest("arr", "v1.0.0").files
    (t,) = entry.tensors
    assert (t.name, t.dtype, t.shape, t.nbytes) == ("array", "F32", (3, 4), 48)
    assert t.digest == _small_identity(np.arange(12, dtype=np.float32).tobytes())


def test_a_directory_with_safetensors_shards_and_other_files(registry: ModelRegistry, tmp_path: Path) -> None:
    """Any .safetensors registered as a path is parsed; other files are diffed by digest."""
    src = tmp_path / "hf"
    src.mkdir()
    rng = np.random.default_rng(0)
    shard = {f"layer.{i}.w": rng.standard_normal((32, 32)).astype(np.float32) for i in range(3)}
    save_numpy(shard, str(src / "model-00001-of-00001.safetensors"))
    (src / "config.json").write_text('{"dim": 32}')
    registry.register(str(src), "hf", version="v1.0.0")
    shard["layer.1.w"] = shard["layer.1.w"] * 0
    save_numpy(shard, str(src / "model-00001-of-00001.safetensors"))
    (src / "config.json").write_text('{"dim": 32, "note": 1}')
    registry.register(str(src), "hf", version="v1.1.0")
    diff = registry.diff("hf", "v1.0.0", "v1.1.0")
    files = {f.path: f for f in diff.files}
    assert files["config.json"].status == "changed" and files["config.json"].tensors is None
    assert "not a tensor file" in files["config.json"].note
    assert _statuses(diff) == {"layer.0.w": "unchanged", "layer.1.w": "changed", "layer.2.w": "unchanged"}
    assert diff.summary["line"] == "1 of 3 tensors changed (4 KiB of 12 KiB); 1 file without tensor data"
    assert diff.summary["tensor_data"] == "partial"


def test_compare_versions_has_the_tensor_summary_row(registry: ModelRegistry, repo: Path) -> None:
    model = tiny_lm()
    registry.register(model, "lm", version="v1.0.0")
    registry.register(fine_tune_head(model), "lm", version="v1.1.0")
    rows = {r["key"]: r for r in registry.compare_versions("lm", ["v1.0.0", "v1.1.0"]).rows["info"]}
    assert rows["tensors (vs first)"]["values"] == [
        "19 tensors",
        "2 of 19 tensors changed (4.02 KiB of 16 MiB)",
    ]
    out = cli(repo, "models", "compare", "lm", "v1.0.0", "v1.1.0").stdout
    assert "2 of 19 tensors changed (4.02 KiB of 16 MiB)" in out


def test_cli_diff_human_json_and_stats(registry: ModelRegistry, repo: Path) -> None:
    model = tiny_lm()
    registry.register(model, "lm", version="v1.0.0")
    registry.register(fine_tune_head(model), "lm", version="v1.1.0")
    out = cli(repo, "models", "diff", "lm", "v1.0.0", "v1.1.0").stdout.splitlines()
    assert out[0] == "Diff of lm v1.0.0 -> v1.1.0"
    assert out[1].split() == ["model.safetensors", "changed"]
    assert out[2].split() == ["TENSOR", "STATUS", "DTYPE", "SHAPE", "SIZE"]
    assert [line.split()[:2] for line in out[3:5]] == [["head.bias", "changed"], ["head.weight", "changed"]]
    assert out[5].strip() == "17 unchanged tensors"
    assert out[-1] == "2 of 19 tensors changed (4.02 KiB of 16 MiB)"
    data = json.loads(cli(repo, "models", "diff", "lm", "v1.0.0", "v1.1.0", "--json").stdout)
    assert {"name", "a", "b", "files", "summary"} <= set(data) and (data["a"], data["b"]) == (
        "v1.0.0",
        "v1.1.0",
    )
    (f,) = data["files"]
    assert f["path"] == "model.safetensors" and f["status"] == "changed" and len(f["tensors"]) == 19
    assert {"name", "status", "dtype", "shape", "nbytes"} <= set(f["tensors"][0])
    assert data["summary"]["changed"] == 2 and data["summary"]["total_bytes"] == 16_801_808
    stats = json.loads(cli(repo, "models", "diff", "lm", "v1.0.0", "v1.1.0", "--json", "--stats").stdout)
    changed = [t for t in stats["files"][0]["tensors"] if t["status"] == "changed"]
    assert all(t["stats"]["max_abs_diff"] > 0 and t["stats"]["rel_l2"] > 0 for t in changed)
    text = cli(repo, "models", "diff", "lm", "v1.0.0", "v1.1.0", "--stats").stdout
    assert "MAX |D|" in text and "REL L2" in text
    r = cli(repo, "models", "diff", "lm", "v1.0.0", "v9.0.0", code=3)
    assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1


def test_unknown_version_is_not_found(registry: ModelRegistry) -> None:
    registry.register(np.zeros(3, dtype=np.float32), "arr", version="v1.0.0")
    with pytest.raises(NotFoundError):
        registry.diff("arr", "v1.0.0", "v2.0.0")


def test_a_single_file_model_registered_under_a_new_name_is_compared_with_the_old(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """model-v1.safetensors -> model-v2.safetensors: the one tensor file removed and the one
    added are paired, so the head change shows as such (stats included), not as 19 + 19."""
    from safetensors.torch import save_file

    model = tiny_lm()
    save_file(model.state_dict(), str(tmp_path / "model-v1.safetensors"))
    registry.register(str(tmp_path / "model-v1.safetensors"), "lm", version="v1.0.0")
    save_file(fine_tune_head(model).state_dict(), str(tmp_path / "model-v2.safetensors"))
    registry.register(str(tmp_path / "model-v2.safetensors"), "lm", version="v1.1.0")
    diff = registry.diff("lm", "v1.0.0", "v1.1.0", stats=True)
    (f,) = diff.files
    assert (f.path, f.renamed_from, f.status) == ("model-v2.safetensors", "model-v1.safetensors", "changed")
    changed = {t.name: t.stats for t in f.tensors if t.status != "unchanged"}
    assert set(changed) == {"head.weight", "head.bias"} and all(
        s["max_abs_diff"] > 0 for s in changed.values()
    )
    assert "model-v2.safetensors (renamed from model-v1.safetensors)  changed" in str(diff)
    assert diff.to_dict()["files"][0]["renamed_from"] == "model-v1.safetensors"


def test_sizes_in_the_summary_line_read_well() -> None:
    from uniflow._format import human_size

    assert [human_size(n, significant=True) for n in (0, 1023, 4116, 40960, 1073551512, 1 << 30)] == [
        "0 B",
        "1023 B",
        "4.02 KiB",
        "40 KiB",
        "1 GiB",
        "1 GiB",
    ]


def test_files_bigger_than_a_read_window_keep_their_tensors(registry: ModelRegistry, tmp_path: Path) -> None:
    """Register reads a file a window at a time (never mapping it): an ``.npy`` array larger
    than a window, and a safetensors file whose header alone is, are still recorded tensor by
    tensor with the digests of their bytes."""
    from uniflow._storage.ingest import WINDOW

    arr = np.random.default_rng(0).standard_normal(WINDOW // 4 + 1000).astype(np.float32)
    np.save(tmp_path / "big.npy", arr)
    st = tmp_path / "st"
    st.mkdir()
    save_numpy(
        {"w": arr[:100], "b": arr[100:110]}, str(st / "model.safetensors"), metadata={"pad": "x" * WINDOW}
    )
    registry.register(tmp_path / "big.npy", "arr", version="v1.0.0")
    registry.register(st, "st", version="v1.0.0")
    (entry,) = registry.repository.manifest("arr", "v1.0.0").files
    (t,) = entry.tensors
    assert (t.name, t.dtype, t.shape) == ("big", "F32", (arr.size,))
    assert t.digest == range_identity(entry.chunks, t.begin, t.end, arr.tobytes())
    (entry,) = registry.repository.manifest("st", "v1.0.0").files
    got = {t.name: t.digest for t in entry.tensors}
    assert entry.tensors[0].begin > WINDOW  # the first tensor starts past the first window
    assert got == {
        "w": _small_identity(arr[:100].tobytes()),
        "b": _small_identity(arr[100:110].tobytes()),
    }
