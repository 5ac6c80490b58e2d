"""The web UI under a policy: the history and version pages show who signed every event and
version tag and flag the unsigned and failing ones; the JSON API carries the same verdicts.
Without a policy the pages and the API are as before. ``uniflow ui`` runs as a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import make_repo
from tests.ui._browser import http, ui_server

from . import test_signed_lifecycle as signed
from .conftest import Key
from .test_consume_push import forge
from .test_signed_lifecycle import ALICE, CI, register, staged

keys = signed.keys  # the fixtures: five keys, and a repository whose policy alice signed
governed = signed.governed


def test_pages_show_signers_and_flag_an_unsigned_promotion(governed: Path, keys: dict[str, Key]) -> None:
    v = staged(governed, keys)
    forged = forge(governed, v, "production")
    with ui_server(governed) as (url, _proc):
        status, _headers, page = http(f"{url}models/clf/history")
        assert status == 200
        assert "<th>Signed by</th>" in page
        rows = page.split('<tr data-seq="')[1:]  # newest first
        assert len(rows) == 3
        assert '<strong class="flag">unsigned</strong>' in rows[0] and "FAIL: " in rows[0]
        assert "needs 1 approval" in rows[0]
        assert CI in rows[1] and "FAIL" not in rows[1] and 'class="signature verified"' in rows[1]
        assert ALICE in rows[2] and "FAIL" not in rows[2]

        version = http(f"{url}models/clf/{v}")[2]
        assert "<dt>signed by</dt>" in version and ALICE in version
        assert "FAIL: " in version  # its own events include the forged promotion

        history = json.loads(http(f"{url}api/models/clf/history")[2])
        assert [(e["commit"] == forged, e["signature"]["signer"], e["signature"]["ok"]) for e in history] == [
            (False, ALICE, True),
            (False, CI, True),
            (True, None, False),
        ]
        shown = json.loads(http(f"{url}api/models/clf/{v}")[2])
        assert shown["signature"]["signer"] == ALICE and shown["signature"]["ok"]
        assert [e["signature"]["ok"] for e in shown["history"]] == [True, True, False]


def test_without_a_policy_the_pages_show_nothing_new(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "plain")
    v = register(repo, None)
    with ui_server(repo) as (url, _proc):
        page = http(f"{url}models/clf/history")[2]
        assert "Signed by" not in page and "flag" not in page
        assert "signed by" not in http(f"{url}models/clf/{v}")[2]
        history = json.loads(http(f"{url}api/models/clf/history")[2])
        assert history and all("signature" not in e for e in history)
        assert "signature" not in json.loads(http(f"{url}api/models/clf/{v}")[2])
