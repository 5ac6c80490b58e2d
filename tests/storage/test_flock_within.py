"""``_storage.fsio.flock_within``: the one bounded wait for an exclusive ``flock`` (the mirror,
the rollback record and a Triton deploy all take their locks through it)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from uniflow._errors import ConcurrencyError
from uniflow._storage.fsio import flock_within


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def test_a_free_lock_is_taken_and_a_held_one_times_out_naming_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder, waiter = _open(path), _open(path)  # two open file descriptions: flock tells them apart
    try:
        flock_within(holder, 1.0, "unused")
        start = time.monotonic()
        with pytest.raises(ConcurrencyError, match=r"^another deploy has held it for more than 0s$"):
            flock_within(waiter, 0.2, "another deploy has held it")
        assert 0.2 <= time.monotonic() - start < 5  # it waited, and not forever
        fcntl.flock(holder, fcntl.LOCK_UN)
        flock_within(waiter, 1.0, "unused")  # released: taken at once
    finally:
        os.close(holder)
        os.close(waiter)
