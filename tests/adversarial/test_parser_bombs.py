"""Bounded before parsed: hostile manifests, Git objects, headers and configs cost little.

Items 7 and 8 of the attacker's review. Before: a manifest of nested empty arrays in a
field the pre-scan skipped (about 20 KiB on the wire) cost 1.2 GiB and was served; a
zlib-compressed manifest blob of 0.5 MiB was inflated to 512 MiB before any size check;
a 24 MiB safetensors header cost 674 MiB at register; a registry read by URL applied the
``[limits]`` of its own config.toml, so a version claiming 2 TiB was accepted.

Each operation runs in a child process (the CLI, or Python) whose peak RSS is read with
``os.wait4`` and compared to a baseline measured the same way on a benign input.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
import zlib
from hashlib import sha1
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adversarial._forge_git import MANIFEST_PATH, blob, forge_version, git_in, one_line_error, tree
from tests.helpers import GIT_ENV, ROOT, git, shared_setup, write_config
from uniflow import IntegrityError, ModelRegistry, UniflowError
from uniflow._bounded import load_json, load_msgpack
from uniflow._records.manifest import content_digest

MiB = 1 << 20
#: what a refused bomb may cost above the benign baseline (the bombs cost 0.5-1.3 GiB before)
HEADROOM = 200 * MiB


# Runs ``argv`` the way the interpreter would (``-c CODE ...`` or ``-m MODULE ...``) and, at
# exit, writes the process's own ``VmHWM`` to the file named by ``_HWM_FILE``. ``VmHWM`` is the
# high-water mark of the memory the process mapped after exec. ``wait4``'s ``ru_maxrss`` is not:
# subprocess starts the child with vfork, and exec records the *parent's* peak (this pytest
# process, hundreds of MiB after the suite's larger tests) as the child's maxrss.
_MEASURE = """
import atexit, os, runpy, sys
def _hwm():
    with open("/proc/self/status", "rb") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith(b"VmHWM:"))
    with open(os.environ["_HWM_FILE"], "w") as out:
        out.write(str(kib * 1024))
atexit.register(_hwm)
flag, what, *rest = sys.argv[1:]
sys.argv = [what if flag == "-m" else "-c", *rest]
if flag == "-c":
    exec(compile(what, "<string>", "exec"), {"__name__": "__main__"})
else:
    runpy.run_module(what, run_name="__main__", alter_sys=True)
"""


def run_measured(cwd: Path, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """Run ``argv`` (``-c CODE ...`` or ``-m MODULE ...``) in a new Python in ``cwd``:
    (exit code, stderr, the peak resident memory of that process in bytes)."""
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        full = {**os.environ, **GIT_ENV, "UNIFLOW_FORCE_TTY": "0", "PYTHONPATH": str(ROOT), **(env or {})}
        full["_HWM_FILE"] = str(hwm)
        r = subprocess.run(
            [sys.executable, "-c", _MEASURE, *argv],
            cwd=cwd,
            env=full,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        return r.returncode, r.stderr, int(hwm.read_text())


def uniflow(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, int]:
    return run_measured(cwd, ["-m", "uniflow", *args], env)


@pytest.fixture
def base(registry: ModelRegistry, tmp_path: Path) -> dict[str, Any]:
    """A real one-file version ``m v1.0.0``; its manifest."""
    d = tmp_path / "model-src"
    d.mkdir()
    (d / "weights.bin").write_bytes(os.urandom(64 << 10))
    registry.register(str(d), "m", version="v1.0.0")
    m = copy.deepcopy(registry.repository.index.manifest("m", "v1.0.0")[1].to_dict())
    registry.close()
    return m


def _v2(m: dict[str, Any], **fields: Any) -> dict[str, Any]:
    m = copy.deepcopy(m)
    m.update(version="v2.0.0", **fields)
    m["content_digest"] = content_digest(m["files"])
    return m


def _baseline(repo: Path) -> int:
    code, err, rss = uniflow(repo, "models", "show", "m", "v1.0.0")
    assert code == 0, err
    return rss


# ---------------------------------------------------------------------- item 7: msgpack
def test_wide_empty_arrays_in_a_skipped_field_are_refused_cheaply(base: dict[str, Any], repo: Path) -> None:
    """20 MiB of ``0x90`` (empty arrays) as lists of 2^20 empty lists under ``metrics``:
    each byte became a 64-byte Python list (1.3 GiB), the pre-scan skipped the field and
    ``_json_like`` accepted it, so ``models show`` printed it. Now: refused from its bytes."""
    row = b"\xdd" + (1 << 20).to_bytes(4, "big") + b"\x90" * (1 << 20)  # 2^20 empty arrays
    wide = b"\xdc\x00\x14" + row * 20  # packed by hand: the test never builds the lists
    data = msgpack.packb(_v2(base, metrics={"loss": "PLACEHOLDER"}), use_bin_type=True)
    data = data.replace(msgpack.packb("PLACEHOLDER"), wide)
    assert len(zlib.compress(data)) < 64 << 10  # tiny on the wire
    forge_version(repo, "m", "v2.0.0", data)
    baseline = _baseline(repo)
    code, err, rss = uniflow(repo, "models", "show", "m", "v2.0.0")
    assert code != 0, f"served, peak {rss >> 20} MiB (baseline {baseline >> 20} MiB)"
    line = one_line_error(err)
    assert "v2.0.0" in line and "memory" in line, line
    assert rss < baseline + HEADROOM, (rss >> 20, baseline >> 20)


def test_deep_arrays_in_a_file_entry_are_refused(base: dict[str, Any], repo: Path) -> None:
    """Nesting beyond what a manifest needs, in a file entry's field the pre-scan skipped
    (msgpack's C stack allows 1024 levels; each level costs an object)."""
    m = _v2(base)
    m["files"][0]["extra"] = "PLACEHOLDER"
    packed = msgpack.packb(m, use_bin_type=True)
    deep = b"\x91" * 900 + b"\x90"  # [[[...[]...]]], 901 levels (msgpack.packb stops at 512)
    forge_version(repo, "m", "v2.0.0", packed.replace(msgpack.packb("PLACEHOLDER"), deep))
    code, err, _rss = uniflow(repo, "models", "show", "m", "v2.0.0")
    assert code != 0
    assert "nests deeper" in one_line_error(err)


# ---------------------------------------------------------------------- item 7: Git objects
def _zlib_bomb_object(repo: Path, size: int, prefix: bytes) -> str:
    """Write a loose blob of ``prefix`` + NULs (``size`` bytes in all) by hand, streaming
    (the test never holds it): its header states its true size. Returns its id."""
    head = f"blob {size}\0".encode()
    h = sha1(head + prefix)
    z = zlib.compressobj(9)
    parts = [z.compress(head + prefix)]
    zeros = bytes(1 << 20)
    left = size - len(prefix)
    while left:
        n = min(left, len(zeros))
        h.update(zeros[:n])
        parts.append(z.compress(zeros[:n]))
        left -= n
    parts.append(z.flush())
    sha = h.hexdigest()
    path = repo / ".git" / "objects" / sha[:2] / sha[2:]
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"".join(parts))
    return sha


def _version_on_blob(repo: Path, blob_sha: str) -> None:
    card = tree(repo, {"manifest.msgpack": ("blob", blob_sha)})
    root = tree(repo, {".uniflow": ("tree", tree(repo, {"card": ("tree", card)}))})
    commit = git_in(repo, "commit-tree", root, "-m", "Register model m v2.0.0")
    tag = git_in(
        repo,
        "mktag",
        data=f"object {commit}\ntype commit\ntag models/m/v2.0.0\ntagger M <m@x> 1 +0000\n\nx\n".encode(),
    )
    git(repo, "update-ref", "refs/tags/models/m/v2.0.0", tag)


@pytest.mark.parametrize("packed", [False, True], ids=["loose", "packed"])
def test_zlib_bomb_manifest_blob_is_refused_before_inflating(
    base: dict[str, Any], repo: Path, packed: bool
) -> None:
    """A 0.5 MiB loose object whose header states 512 MiB (a manifest prefix, then NULs):
    dulwich inflated all of it before ``unpack`` looked at the length, even offline. Now
    refused from the header, loose or (after ``git gc``) packed."""
    prefix = msgpack.packb(_v2(base), use_bin_type=True)
    sha = _zlib_bomb_object(repo, 512 * MiB, prefix)
    assert (repo / ".git" / "objects" / sha[:2] / sha[2:]).stat().st_size < MiB
    _version_on_blob(repo, sha)
    if packed:
        git(repo, "gc", "-q", "--prune=now")
        assert not (repo / ".git" / "objects" / sha[:2] / sha[2:]).exists()
    baseline = _baseline(repo)
    code, err, rss = uniflow(repo, "models", "show", "m", "v2.0.0")
    assert code != 0, f"exit 0, peak {rss >> 20} MiB (baseline {baseline >> 20} MiB)"
    line = one_line_error(err)
    assert rss < baseline + HEADROOM, (line, rss >> 20, baseline >> 20)
    assert "inflating" in line and str(512 * MiB) in line, line
    assert rss < baseline + HEADROOM, (rss >> 20, baseline >> 20)


def test_zlib_bomb_state_json_is_refused_before_inflating(base: dict[str, Any], repo: Path) -> None:
    """A lifecycle commit whose ``state.json`` is a 0.5 MiB loose object stating 512 MiB:
    read whole by dulwich before its 32 MiB bound was checked. Now refused from its header."""
    sha = _zlib_bomb_object(repo, 512 * MiB, b'{"format": 1, "model": "m", "past": {}, "seq": 1, "x": "')
    event = blob(repo, b"{}")
    root = tree(repo, {"event.json": ("blob", event), "state.json": ("blob", sha)})
    git(repo, "update-ref", "refs/uniflow/models/m", git_in(repo, "commit-tree", root, "-m", "promote m"))
    read = (
        "from uniflow import ModelRegistry, IntegrityError\n"
        "try:\n    ModelRegistry('.').repository.lifecycle.state('m')\n"
        "except IntegrityError as exc:\n    raise SystemExit(str(exc))\n"
    )
    code, err, rss = run_measured(repo, ["-c", read])
    assert rss < 150 * MiB + HEADROOM, (rss >> 20, err)
    assert code != 0 and "state.json" in err and "inflating" in err, err


@pytest.mark.parametrize("deltas", ["ofs", "ref"])
def test_object_sizes_from_pack_headers_match_git(repo: Path, deltas: str) -> None:
    """The sizes read from pack entry and delta headers (OFS_DELTA after ``git gc``,
    REF_DELTA from ``git repack`` without offsets) are git's own (``git cat-file``), and
    a blob read through them is byte-identical."""
    from dulwich.repo import Repo

    from uniflow._records.git import GitRepo, object_sizes

    text = os.urandom(20_000).hex()
    shas = [blob(repo, (text[: 30_000 + 97 * i] + f"-{i}").encode()) for i in range(12)]
    root = tree(repo, {f"f{i}": ("blob", sha) for i, sha in enumerate(shas)})
    git(repo, "update-ref", "refs/keep", git_in(repo, "commit-tree", root, "-m", "keep"))
    git(repo, "-c", "repack.useDeltaBaseOffset=" + ("true" if deltas == "ofs" else "false"), "repack", "-adf")
    git(repo, "prune-packed")
    out = git(repo, "verify-pack", "-v", *map(str, (repo / ".git/objects/pack").glob("*.idx")))
    assert any(len(line.split()) >= 7 for line in out.splitlines()), "no delta in the pack"
    g = GitRepo(repo)
    with Repo(str(repo)) as dulwich_repo:
        for sha in [*shas, root]:
            found = object_sizes(dulwich_repo.object_store, sha)
            assert found is not None
            assert found[:2] == (
                git(repo, "cat-file", "-t", sha).strip(),
                int(git(repo, "cat-file", "-s", sha)),
            )
    for sha in shas:
        assert (
            g.read_blob(sha, 1 << 20)
            == subprocess.run(
                ["git", "cat-file", "blob", sha], cwd=repo, capture_output=True, check=True
            ).stdout
        )
    with pytest.raises(IntegrityError, match="more than the limit"):
        g.read_blob(shas[-1], 1000)


def test_loose_object_whose_header_lies_is_inflated_no_further(repo: Path) -> None:
    """A loose object whose header says 10 bytes but whose stream holds 64 MiB: inflated
    at most to the cap, then refused as damaged (``GitRepo.read_blob``)."""
    from uniflow._records.git import GitRepo, inflate_loose

    z = zlib.compressobj(9)
    body = z.compress(b"blob 10\0") + z.compress(bytes(64 * MiB)) + z.flush()
    path = repo / ".git" / "objects" / "ab" / ("c" * 38)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(body)
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError, match="not the size its header states"):
            inflate_loose(str(path), 1 << 10)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, peak
    assert GitRepo(repo).read_blob(blob(repo, b"small"), 100) == b"small"


# ---------------------------------------------------------------------- item 7: tensor headers
def test_huge_safetensors_header_costs_little_at_register(repo: Path, tmp_path: Path) -> None:
    """A 24 MiB safetensors header (empty arrays in ``__metadata__``-like entries) cost
    674 MiB when register parsed it. Now: not parsed (over the 16 MiB cap, and its cost
    estimate is refused too): the file is stored as bytes, without a tensor list."""
    hdr = b'{"x":[' + b"[]," * (8 * MiB) + b"[]]}"
    hdr += b" " * (-len(hdr) % 8)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(len(hdr).to_bytes(8, "little") + hdr)
    small = tmp_path / "small"
    small.mkdir()
    (small / "model.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0{}")
    register = (
        "import sys; from uniflow import ModelRegistry; r = ModelRegistry('.');"
        "r.register(sys.argv[1], 'm', version=sys.argv[2]); r.close()"
    )
    code, err, baseline = run_measured(repo, ["-c", register, str(small), "v0.1.0"])
    assert code == 0, err
    code, err, rss = run_measured(repo, ["-c", register, str(src), "v1.0.0"])
    assert code == 0, err
    assert rss < baseline + HEADROOM, (rss >> 20, baseline >> 20)
    m = ModelRegistry(repo).repository.index.manifest("m", "v1.0.0")[1]
    assert m.files[0].tensors is None


def test_cost_estimate_refuses_a_small_dense_header() -> None:
    """Under the size cap, a header whose objects would cost more than 16x its bytes is refused."""
    from uniflow._records.tensors import parse_safetensors

    junk = b"[" + b"[]," * 100_000 + b"[]]"
    tensor = b'"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}'
    assert parse_safetensors(memoryview(b"\x50\0\0\0\0\0\0\0{" + tensor.ljust(78) + b"}\0"))
    hdr = b'{"__metadata__":{"junk":' + junk + b"}," + tensor + b"}"
    assert parse_safetensors(memoryview(len(hdr).to_bytes(8, "little") + hdr + b"\0")) is None
    with pytest.raises(IntegrityError, match="memory"):
        load_json(hdr, "header", limit=len(hdr))


# ---------------------------------------------------------------------- item 8: limits from the remote
def test_remote_limits_cannot_raise_the_local_ones(tmp_path: Path) -> None:
    """A registry read by URL whose config.toml sets ``max_version_bytes`` to 2^60, and a
    version claiming 2 TiB: before, the remote's limits applied and ``models show`` printed
    it; now the built-in defaults (1 TiB) apply and the version is refused."""
    bare, a = shared_setup(tmp_path, config_extra="[limits]\nmax_version_bytes = 1152921504606846976\n")
    chunk = 64 * MiB
    size = 2 << 40
    files = [
        {
            "path": "w.bin",
            "size": size,
            "mode": 0o644,
            "digest": "ab" * 32,
            "chunks": [[bytes([i % 256]) * 32, chunk] for i in range(size // chunk)],
        }
    ]
    m = {
        "format": 2,
        "name": "m",
        "version": "v2.0.0",
        "created_at": "2024-01-01T00:00:00+00:00",
        "author": "M",
        "framework": "files",
        "serializer": "files",
        "files": files,
        "content_digest": content_digest(files),
    }
    forge_version(a, "m", "v2.0.0", m)
    git(a, "push", "-q", "origin", "refs/tags/models/m/v2.0.0")
    env = {"UNIFLOW_CACHE_DIR": str(tmp_path / "cache")}
    work = tmp_path / "work"
    work.mkdir()
    code, err, _rss = uniflow(work, "--repo", f"file://{bare}", "models", "show", "m", "v2.0.0", env=env)
    assert code != 0, err
    assert "max_version_bytes" in one_line_error(err)
    # the remote may tighten them: a lower [limits] of its own still applies
    write_config(a, f'[remotes.origin]\nurl = "{tmp_path / "blobs"}"\n[limits]\nmax_manifest_bytes = 100\n')
    git(a, "commit", "-q", "-am", "tighter")
    git(a, "push", "-q", "origin", "main")
    code, err, _rss = uniflow(work, "--repo", f"file://{bare}", "models", "show", "m", "v2.0.0", env=env)
    assert code != 0 and "max_manifest_bytes (100" in one_line_error(err)


def test_remote_config_nested_toml_is_a_config_error() -> None:
    from uniflow._errors import ConfigError
    from uniflow._records.config import parse_remote_config

    with pytest.raises(ConfigError):
        parse_remote_config(b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "config.toml of x")
    with pytest.raises(ConfigError, match="memory"):
        parse_remote_config(b"a = [" + b"[]," * 300_000 + b"]\n", "config.toml of x")


# ---------------------------------------------------------------------- properties
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=40),
)
#: chunk entries ``[bin 32, int]``, which the walker takes in runs
_chunk = st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 2**33)).map(list)
_values = st.recursive(
    _leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=6),
        st.dictionaries(st.text(max_size=4), kids, max_size=6),
        st.lists(_chunk, max_size=300),
        st.lists(st.sampled_from([0, -1, -32, None, True, [], {}, ""]), max_size=300),
    ),
    max_leaves=60,
)


def _bounded_peak(fn: Any, data: bytes) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(UniflowError):
            fn(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, cut=st.integers(0, 64), junk=st.binary(max_size=16), nest=st.integers(0, 200))
def test_bounded_msgpack_parses_or_refuses(value: Any, cut: int, junk: bytes, nest: int) -> None:
    """Any bytes (a value, cut short, with junk appended, wrapped in deep arrays): a valid
    parse equal to the value, or a UniflowError, never another exception; memory bounded."""
    good = msgpack.packb(value, use_bin_type=True)
    for data in (good, good[: len(good) - cut], good + junk, b"\x91" * nest + good, junk):
        try:
            out = load_msgpack(data, "x")
        except UniflowError:
            pass
        else:
            if data == good:
                assert out == msgpack.unpackb(good, raw=False, strict_map_key=False)
        assert _bounded_peak(lambda d: load_msgpack(d, "x"), data) < 16 * len(data) + 2 * MiB


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200), value=_values, flip=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_bounded_msgpack_agrees_with_msgpack(data: bytes, value: Any, flip: int, byte: int) -> None:
    """Whatever the walker accepts, msgpack decodes to the same value it returns; random and
    corrupted bytes give a value or a UniflowError, never another exception."""
    good = msgpack.packb(value, use_bin_type=True)
    bent = bytearray(good)
    bent[flip % len(bent)] = byte
    for raw in (data, bytes(bent)):
        try:
            out = load_msgpack(raw, "x")
        except UniflowError:
            continue
        expected = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        assert msgpack.packb(out, use_bin_type=True) == msgpack.packb(expected, use_bin_type=True)  # NaN-safe


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, cut=st.integers(0, 64), width=st.integers(0, 50_000), nest=st.integers(0, 3000))
def test_bounded_json_parses_or_refuses(value: Any, cut: int, width: int, nest: int) -> None:
    good = json.dumps(value, default=lambda b: b.hex()).encode()
    wide = b"[" + b"[]," * width + b"[]]"
    deep = b"[" * nest + b"]" * nest
    for data in (good, good[: len(good) - cut], wide, deep):
        try:
            out = load_json(data, "x", limit=1 << 20)
        except UniflowError:
            pass
        else:
            if data == good:
                assert out == json.loads(good)
        assert _bounded_peak(lambda d: load_json(d, "x", limit=1 << 20), data) < 16 * len(data) + 2 * MiB


def test_manifest_path_constant_is_the_forged_one() -> None:
    assert MANIFEST_PATH == ".uniflow/card/manifest.msgpack"
