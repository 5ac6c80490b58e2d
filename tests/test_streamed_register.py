"""Registering an in-memory model streams it (issue 14, item 2), and the store's chunk writes
(issue 14, item 3): what a user sees must not change.

A torch state dict, tensor or module is never written to a temporary file: its safetensors
bytes go from the tensors' memory into the chunker. The version must be the one registering
the ``save_file`` output from disk gives: same chunks, file digest and tensor list, byte for
byte in the manifest.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch as st
import torch

from tests.helpers import make_repo, stored_chunks
from uniflow import ModelRegistry
from uniflow._records.manifest import pack
from uniflow._storage.chunking import CHUNK_PARAMS
from uniflow._storage.store import ObjectStore
from uniflow.serializers._torch import TorchSerializer

MIB = 1 << 20


def _state_dict() -> dict[str, torch.Tensor]:
    """~12 MiB of mixed dtypes: tensors smaller and larger than a chunk, empty and scalar
    ones, names safetensors orders by dtype first, a name JSON must escape."""
    g = torch.Generator().manual_seed(7)
    sd: dict[str, torch.Tensor] = {}
    for i in range(12):
        sd[f"layers.{i:02d}.weight"] = torch.randn(256 + 37 * i, 1024, generator=g)
        sd[f"layers.{i:02d}.bias"] = torch.randn(1024, generator=g).half()
    sd["embed.bf16"] = torch.randn(700, 512, generator=g).bfloat16()
    sd["head.big"] = torch.randn(1500, 1024, generator=g)  # ~6 MiB: chunks inside one tensor
    sd["steps"] = torch.arange(1000, dtype=torch.int64)
    sd["mask"] = torch.rand(333, generator=g) > 0.5
    sd["scale"] = torch.tensor(0.5)
    sd["empty"] = torch.empty(0, 4)
    sd['odd "name" \\ é'] = torch.ones(3, dtype=torch.int8)
    return sd


def _files(registry: ModelRegistry, name: str, version: str) -> list[dict[str, Any]]:
    """The file entries of a version's manifest, as its bytes hold them."""
    return [f.to_dict() for f in registry.repository.index.manifest(name, version, from_git=True)[1].files]


def test_a_state_dict_is_registered_without_a_temporary_file_as_its_file_would_be(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = _state_dict()
    on_disk = tmp_path / "model.safetensors"
    st.save_file(sd, str(on_disk))
    registry.register(on_disk, "from-disk", version="v1.0.0")

    def no_file(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the state dict was written to a temporary file")

    with monkeypatch.context() as mp:
        mp.setattr(TorchSerializer, "save", no_file)
        registry.register(sd, "streamed", version="v1.0.0")

    (disk,) = _files(registry, "from-disk", "v1.0.0")
    (streamed,) = _files(registry, "streamed", "v1.0.0")
    assert pack({"f": streamed}) == pack({"f": disk})  # chunks, digest, tensors: byte for byte
    assert len(streamed["chunks"]) > 5 and len(streamed["tensors"]) == len(sd)
    loaded = registry.load("streamed", "v1.0.0")
    assert loaded.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k
    assert registry.verify().ok


def test_streamed_and_saved_registers_give_the_same_manifest(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = {**_state_dict(), "tab\tname": torch.ones(2)}  # escaped in the header; no tensor list
    tied = {"a": sd["head.big"], "b": sd["head.big"], "c": sd["steps"]}  # an alias is meta
    registry.register(sd, "m", version="v1.0.0")
    registry.register(tied, "t", version="v1.0.0")
    with monkeypatch.context() as mp:
        mp.setattr(TorchSerializer, "stream", lambda self, obj, trust=False: None)
        registry.register(sd, "m", version="v2.0.0")
        registry.register(tied, "t", version="v2.0.0")
    for name in ("m", "t"):
        a = registry.repository.index.manifest(name, "v1.0.0", from_git=True)[1].to_dict()
        b = registry.repository.index.manifest(name, "v2.0.0", from_git=True)[1].to_dict()
        for m in (a, b):
            m.pop("version"), m.pop("created_at")
        assert pack(a) == pack(b)
    assert registry.load("t", "v1.0.0")["b"].equal(sd["head.big"])


def test_modules_and_tensors_stream_and_load_back(registry: ModelRegistry) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10))
    assert TorchSerializer().stream(net) is not None
    registry.register(net, "net", version="v1.0.0")
    back = registry.load(
        "net",
        "v1.0.0",
        model=torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10)),
    )
    for a, b in zip(net.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    t = torch.randn(3, 5, requires_grad=True)
    registry.register(t, "vec", version="v1.0.0")
    got = registry.load("vec", "v1.0.0")
    assert torch.equal(got, t.detach()) and got.requires_grad


def test_a_module_with_tied_weights_is_saved_to_a_file_as_before(registry: ModelRegistry) -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(8, 8)
            self.b = torch.nn.Linear(8, 8)
            self.b.weight = self.a.weight

    net = Tied()
    assert TorchSerializer().stream(net) is None  # save_model records the tie as metadata
    registry.register(net, "tied", version="v1.0.0")
    back = registry.load("tied", "v1.0.0", model=Tied())
    assert torch.equal(back.b.weight, net.a.weight)


def _cut_whole(data: bytes) -> list[tuple[int, int]]:
    from pyfastcdc import FastCDC

    chunker = FastCDC(
        CHUNK_PARAMS["avg_size"], min_size=CHUNK_PARAMS["min_size"], max_size=CHUNK_PARAMS["max_size"]
    )
    return [(c.offset, c.length) for c in chunker.cut_buf(data)]


@pytest.mark.parametrize("parts", [1, 2, 3, 40, 400])
def test_bytes_in_pieces_get_the_chunks_and_record_of_the_joined_bytes(tmp_path: Path, parts: int) -> None:

    rnd = random.Random(parts)
    data = rnd.randbytes(24 * MIB)
    whole = _cut_whole(data)
    bounds = sorted(rnd.sample(range(1, len(data)), parts - 1))
    if parts == 3:  # pieces ending exactly where a chunk ends, and a tiny one
        bounds = [whole[2][0], whole[2][0] + 5]
    edges = [0, *bounds, len(data)]
    pieces = [data[a:b] for a, b in zip(edges, edges[1:], strict=False)] + [b""]
    src = tmp_path / "joined.bin"
    src.write_bytes(data)
    store = ObjectStore(tmp_path / ".uniflow")
    assert store.put_segments(pieces) == store.put_file(src)


def test_every_stored_chunk_is_read_only_and_nothing_is_left_in_tmp(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / ".uniflow")
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(6 * MIB))
    rec = store.put_file(src)
    again = store.put_file(src)  # every chunk exists: the first writer's file stays
    assert rec == again
    data, pos = src.read_bytes(), 0
    where = {c.digest: c.path for c in stored_chunks(store)}
    for c in rec.chunks:
        assert where[c.digest].stat().st_mode & 0o777 == 0o444
        assert store.read_chunk(c) == data[pos : pos + c.size]
        pos += c.size
    assert {p.suffix for p in (store.root / "packs").iterdir()} == {".pack", ".idx"}
    assert all(p.stat().st_mode & 0o777 == 0o444 for p in (store.root / "packs").iterdir())
    assert [p.name for p in store.tmp.iterdir() if p.name != "pins"] == []
    assert store.materialize(rec).read_bytes() == src.read_bytes()


def test_where_unnamed_files_are_refused_chunks_go_through_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)  # a kernel or platform without O_TMPFILE
    repo = make_repo(tmp_path / "repo")
    data = os.urandom(5 * MIB)
    (tmp_path / "w.bin").write_bytes(data)
    reg = ModelRegistry(repo)
    reg.register(tmp_path / "w.bin", "m", version="v1.0.0")
    assert (Path(reg.load_path("m", "v1.0.0")) / "w.bin").read_bytes() == data
    assert [p.name for p in (repo / ".git" / "uniflow" / "tmp").iterdir() if p.name != "pins"] == []
    assert reg.verify().ok


def test_tensor_digests_known_from_the_last_register_give_the_same_manifest(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """Issue 12: a tensor whose bytes lie in the same chunks at the same offsets as in the
    model's latest version takes the digest that register computed (kept in the MAC-ed
    derived cache); the manifest is the one a register from scratch writes."""
    sd = _state_dict()
    registry.register(sd, "m", version="v1.0.0")
    tuned = dict(sd)
    tuned["layers.05.weight"] = sd["layers.05.weight"] + 1  # a fine-tune of one tensor
    registry.register(tuned, "m", version="v1.1.0")
    fresh = ModelRegistry(make_repo(tmp_path / "fresh"))
    fresh.register(tuned, "m", version="v1.1.0")
    (reused,) = _files(registry, "m", "v1.1.0")
    (scratch,) = _files(fresh, "m", "v1.1.0")
    assert pack({"f": reused}) == pack({"f": scratch})
    (first,) = _files(registry, "m", "v1.0.0")
    changed = {t[0] for t, u in zip(first["tensors"], reused["tensors"], strict=True) if t[5] != u[5]}
    assert changed == {"layers.05.weight"}


def test_tensor_identities_come_from_the_chunks_not_from_a_cache(registry: ModelRegistry) -> None:
    """Format 3: a tensor's identity is built from the chunk names of the register itself
    (and the bytes of the chunk parts it holds), so nothing a cache holds can change it."""
    sd = _state_dict()
    registry.register(sd, "m", version="v1.0.0")
    (entry,) = _files(registry, "m", "v1.0.0")
    assert not (registry.store.root / "cache" / "git" / "tensors").exists()  # no digest is kept for reuse
    registry.register(sd, "m", version="v1.0.1")
    (again,) = _files(registry, "m", "v1.0.1")
    assert again["tensors"] == entry["tensors"] and again["digest"] == entry["digest"]
