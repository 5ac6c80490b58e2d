"""TEST-ONLY injection points: deterministic kills and pauses at named places.

Nothing here is part of the API and nothing here runs unless a test asks for it. The
library calls :func:`point` at these named places:

* ``_storage.chunking``: ``put-file-read``, once the first chunk of a file copied from
  disk is handed to a writer;
* ``_storage.store`` and ``sharing.remote``: ``whole-digest``, once a cached copy or a
  file a get has written is open and about to be checked (its stamp, or its size); and
  ``_storage.ingest``, before ``fd_digest`` hashes an open file;
* ``_storage.verified``: ``verify-chunks``, each time ``holds_chunks`` reads and hashes a
  file against its chunk list;
* ``_storage.safefs``: ``export-write``, once a file export has copied a file's bytes;
* ``_storage.store`` (``ObjectStore.adopt``, while an old store is moved):
  ``store-migrate-linked``, ``store-migrate-unlinked``, ``store-migrate-chunks-moved``;
* ``_records.lifecycle``: ``after-lifecycle-cas``, once a lifecycle ref moved;
* ``_ops.register``: ``register-before-tag``, ``register-before-event``;
* ``_ops.maintenance``: ``gc-after-set-aside``, once gc moved its candidates aside;
  ``gc-loose-packed``, once ``gc --repack`` unlinked the chunk files now in packs;
* ``_storage.repack``: ``gc-repacked``, once gc's new packs are durable; ``gc-pack-dropped``,
  after each pack gc deleted; ``_storage.pins``: ``gc-pack-aside``, between moving a pack's
  ``.pack`` and its ``.idx`` aside;
* ``sharing.push``: ``push-before-git-push``, ``push-after-git-push``;
* ``sharing.mirror`` (a mirror's sync): ``mirror-sync-listed``, ``mirror-sync-fetched-tags``;
* ``sharing.remote`` (``_VersionWriter``): ``get-file-written``, after each file a get by
  URL has written, verified, fsynced and closed;
* ``serving.triton``: ``triton-staged``, once a version directory is complete under its
  temporary name, before it is renamed into place;
* ``_storage.packwriter`` (``PackWriter``), at each step of writing a pack:
  ``pack-chunk-written``, ``pack-written``, ``pack-synced``, ``pack-linked``,
  ``pack-indexed``, ``pack-done``.

With the variables below unset a call costs three environment look-ups and does nothing.

* ``UNIFLOW_TEST_KILL_AT=<name>``: the process sends itself SIGKILL at point ``<name>``
  (a crash at exactly that place, with no clean-up of any kind).
* ``UNIFLOW_TEST_PAUSE_AT=<name>`` with ``UNIFLOW_TEST_PAUSE_DIR=<dir>``: at point ``<name>``
  the process writes ``<dir>/paused`` (holding its pid) and waits until ``<dir>/go`` exists,
  at most :data:`PAUSE_LIMIT` seconds, then carries on. A test runs something else while
  the process is held at that exact place, then creates ``go``.
* ``UNIFLOW_TEST_COUNT_DIR=<dir>``: every point reached appends its name as a line to
  ``<dir>/points`` (a test counts, e.g., how often a file was hashed).
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["COUNT_ENV", "KILL_ENV", "PAUSE_DIR_ENV", "PAUSE_ENV", "PAUSE_LIMIT", "point"]

KILL_ENV = "UNIFLOW_TEST_KILL_AT"
PAUSE_ENV = "UNIFLOW_TEST_PAUSE_AT"
PAUSE_DIR_ENV = "UNIFLOW_TEST_PAUSE_DIR"
COUNT_ENV = "UNIFLOW_TEST_COUNT_DIR"
#: the longest a paused process waits for ``go`` (seconds)
PAUSE_LIMIT = 60.0


def point(name: str) -> None:
    """Test-only: SIGKILL or pause here when the environment names this point (see module doc)."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(PAUSE_ENV) == name:
        _pause(os.environ.get(PAUSE_DIR_ENV, ""))
    count_dir = os.environ.get(COUNT_ENV)
    if count_dir:
        with open(os.path.join(count_dir, "points"), "a") as f:
            f.write(name + "\n")


def _pause(directory: str) -> None:
    if not directory or not os.path.isdir(directory):
        return
    tmp = os.path.join(directory, f".paused.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(directory, "paused"))
    go = os.path.join(directory, "go")
    deadline = time.monotonic() + PAUSE_LIMIT
    while not os.path.exists(go) and time.monotonic() < deadline:  # bounded by PAUSE_LIMIT
        time.sleep(0.01)
