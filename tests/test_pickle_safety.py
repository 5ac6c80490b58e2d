"""No pickle is executed unless the caller passes trust=True on that call."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tests.helpers import run_py
from uniflow import ModelRegistry, SerializationError, UnsafeLoadError


class Boom:
    """Unpickling this creates a marker file: the shape of a real pickle exploit."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_registering_an_unknown_object_without_trust_is_refused(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    with pytest.raises(SerializationError, match="trust=True"):
        registry.register(model=Boom(str(tmp_path / "m")), name="evil", version="v1.0.0")
    assert registry.list_models() == []


def test_malicious_pickle_never_runs_without_trust(registry: ModelRegistry, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    registry.register(model=Boom(str(marker)), name="evil", version="v1.0.0", trust=True)
    assert not marker.exists()
    with pytest.raises(UnsafeLoadError, match="trust=True"):
        registry.load("evil")
    # a fresh process, as a colleague pulling the registry would be
    r = run_py(
        "from uniflow import ModelRegistry, UnsafeLoadError\n"
        "try:\n    ModelRegistry().load('evil')\nexcept UnsafeLoadError as e:\n    print('REFUSED')\n",
        cwd=registry.root,
    )
    assert r.stdout.strip() == "REFUSED", r.stderr
    assert not marker.exists()
    registry.load("evil", trust=True)
    assert marker.exists()


def test_a_pickle_file_registered_as_a_file_comes_back_as_a_path(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned2"
    src = tmp_path / "model.pkl"
    src.write_bytes(pickle.dumps(Boom(str(marker))))
    registry.register(model=src, name="pkl", version="v1.0.0")
    loaded = registry.load("pkl")
    assert isinstance(loaded, Path) and loaded.read_bytes() == src.read_bytes()
    assert not marker.exists()
