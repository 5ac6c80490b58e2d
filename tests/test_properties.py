"""Property tests (hypothesis) for the chunk store and the lifecycle state machine."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.helpers import make_repo, stored_chunks
from uniflow import ConcurrencyError, ModelRegistry, StageEmptyError, UsageError
from uniflow._storage.chunking import range_b3sum
from uniflow._storage.merkle import merkle_identity
from uniflow._storage.store import ObjectStore

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    data=st.binary(min_size=0, max_size=3 << 20) | st.integers(0, 6 << 20).map(lambda n: os.urandom(n)),
    edit_at=st.floats(0, 1),
    insert=st.binary(min_size=1, max_size=64),
)
def test_store_round_trip_and_local_edits_stay_local(
    tmp_path_factory, data: bytes, edit_at: float, insert: bytes
) -> None:
    root = tmp_path_factory.mktemp("store")
    store = ObjectStore(root / ".uniflow")
    src = root / "f.bin"
    src.write_bytes(data)
    rec = store.put_file(src)
    assert rec.size == len(data) and sum(c.size for c in rec.chunks) == len(data)
    assert rec.digest == merkle_identity((c.digest, c.size) for c in rec.chunks)  # format 3: Merkle identity
    assert range_b3sum(rec.chunks, store.read_chunk) == blake3.blake3(data).hexdigest()  # b3sum, lazily
    assert store.materialize(rec).read_bytes() == data
    # an insertion changes only the chunks around it: content-defined boundaries resync
    pos = int(edit_at * len(data))
    edited = data[:pos] + insert + data[pos:]
    src.write_bytes(edited)
    rec2 = store.put_file(src)
    assert store.materialize(rec2).read_bytes() == edited
    new = {c.digest for c in rec2.chunks} - {c.digest for c in rec.chunks}
    assert len(new) <= 3


def test_equal_files_have_equal_records_and_one_copy(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / ".uniflow")
    data = os.urandom(5 << 20)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data)
    a, b = store.put_file(tmp_path / "a"), store.put_file(tmp_path / "b")
    assert a == b
    assert sorted(c.digest for c in stored_chunks(store)) == sorted({c.digest for c in a.chunks})


class LifecycleMachine(RuleBasedStateMachine):
    """Random promote/archive/rollback sequences against a tiny reference model."""

    versions = ("v1.0.0", "v1.1.0", "v1.2.0")

    @initialize()
    def setup(self) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="uniflow-sm-"))
        self.reg = ModelRegistry(make_repo(self.dir / "repo"))
        for i, v in enumerate(self.versions):
            f = self.dir / f"{v}.bin"
            f.write_bytes(bytes([i]) * 100)
            self.reg.register(model=f, name="m", version=v)
        self.stage_of: dict[str, str] = {}
        self.past: dict[str, list[str]] = {"staging": [], "production": []}
        self.events = 3

    @rule(
        v=st.sampled_from(versions),
        stage=st.sampled_from(["staging", "production", "development", "archived"]),
    )
    def promote(self, v: str, stage: str) -> None:
        self.reg.promote("m", v, stage)
        if stage in ("staging", "production"):
            for other, s in list(self.stage_of.items()):
                if s == stage and other != v:
                    self.stage_of[other] = "archived"
                    self.past[stage].append(other)
        if stage == "development":
            self.stage_of.pop(v, None)
        else:
            self.stage_of[v] = stage
        self.events += 1

    @rule(stage=st.sampled_from(["staging", "production"]))
    def rollback(self, stage: str) -> None:
        holders = {v for v, s in self.stage_of.items() if s == stage}
        past = self.past[stage]
        while past and past[-1] in holders:
            past.pop()
        if not past:
            with pytest.raises(UsageError):
                self.reg.rollback("m", stage)
            return
        target = past.pop()
        assert self.reg.rollback("m", stage).version == target
        for other in holders:
            self.stage_of[other] = "archived"
        self.stage_of[target] = stage
        self.events += 1

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "reg"):
            return
        for v in self.versions:
            assert self.reg.get("m", v).stage == self.stage_of.get(v, "development")
        for stage in ("staging", "production"):
            holders = [v for v, s in self.stage_of.items() if s == stage]
            if holders:
                assert self.reg.get("m", stage=stage).version == holders[0]
            else:
                with pytest.raises(StageEmptyError):
                    self.reg.get("m", stage=stage)
        assert len(self.reg.history("m")) == self.events


TestLifecycleMachine = LifecycleMachine.TestCase
TestLifecycleMachine.settings = settings(max_examples=15, stateful_step_count=12, deadline=None)


def test_a_held_ref_lock_is_waited_for_then_reported(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uniflow._records.git as g

    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    registry.register(model=f, name="m", version="v1.0.0")
    lock = registry.git.git_dir / "refs" / "uniflow" / "models" / "m.lock"
    lock.write_text("held")
    # released after a moment: the promotion waits and then succeeds
    threading.Timer(0.3, lock.unlink).start()
    t0 = time.monotonic()
    registry.promote("m", "v1.0.0", "staging")
    assert time.monotonic() - t0 >= 0.25
    assert registry.get("m", "v1.0.0").stage == "staging"
    # never released: a clear ConcurrencyError after the bounded wait, state unchanged
    lock.write_text("stale")
    monkeypatch.setattr(g, "LOCK_TIMEOUT", 0.5)
    monkeypatch.setattr(g._with_lock_retry, "__defaults__", (0.5,))
    with pytest.raises(ConcurrencyError, match="locked by another process"):
        registry.promote("m", "v1.0.0", "production")
    lock.unlink()
    assert registry.get("m", "v1.0.0").stage == "staging"


def test_a_lock_left_by_a_killed_writer_is_broken(registry: ModelRegistry, tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    lock = registry.git.git_dir / "refs" / "tags" / "models" / "m" / "v1.0.0.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("0" * 40 + "\n")
    old = time.time() - 60
    os.utime(lock, (old, old))  # a writer SIGKILLed a minute ago left this behind
    v = registry.register(model=f, name="m", version="v1.0.0")
    assert v.version == "v1.0.0" and not lock.exists()
