"""Round 3 (issue 25, storage format 3): every row of the issue's "Numbers" table, measured
in one run as ratios of interleaved pairs, with the machine's own limits beside them.

``python -m benchmarks.run --only round3 [--size 1GiB] [--pairs 5] [--large] [--peers]``

Each row runs ``--pairs`` rounds (5; 2 in ``--smoke``). In every round the subject and its
peer run back to back, in an order that alternates from round to round, so that whatever
else the machine does hits both alike; a row's figure is the per-round ratio, reported as
its ``_min`` and its median (the key itself), with the raw ratios under ``"samples"``. The
rows (key ``r3_<row>``; goal as the issue states it):

* ``register_file_vs_cp_fsync``: ``ModelRegistry(fresh repo).register(model=FILE)`` of the
  safetensors model file, durable, in process, against ``cp`` + fsync (<= 1.1; stretch 1.0);
  ``register_file_cpu_s_per_gib``: its CPU seconds (``getrusage``: all threads and the Git
  processes it runs) per GiB (<= 1.4);
* ``tensor_identities_pct``: the same register against a register of the same bytes under
  an opaque name (``model.bin``: no tensor scan, no per-tensor identities), same round:
  (tensor file / opaque - 1) x 100 (<= 3);
* ``register_sd_vs_save_fsync``: ``register(model=<state dict>)`` against
  ``safetensors.torch.save_file`` + fsync (benchmarks/stream.py's rounds; <= 1.5, stretch 1.3);
* ``chunking_2v1``: ``cutting.cut`` of the model file's bytes in memory with no ranges
  (FastCDC over every byte, as an opaque file is cut) on one thread / on two (>= 1.7); a
  tensor file's tensors are cut at fixed steps, which cost nothing to find;
  ``chunking_2v1_file``: the same file read from disk (page cache warm) (reported, no goal);
* ``remote_files_after_push``: files on the directory blob remote after ``uniflow push`` of
  the model (<= 32, judged for 1 GiB);
* ``push_vs_cp_fsync``: ``uniflow push`` (whole process) of a fresh registration to an empty
  directory blob remote and bare Git repository, against ``cp`` + fsync (<= 1.25);
  ``push_dvc_vs_uniflow`` (``--peers``): ``dvc push`` + ``sync`` of the same file to a
  directory remote / ``uniflow push``, same round (>= 1.2);
* ``get_fresh_vs_cp_fsync``: ``uniflow get file://BARE NAME --stage production -o OUT``,
  whole process, fresh per-user cache (<= 1.4); ``get_warm_vs_cp_fsync``: the same get into
  a new OUT (<= 1.0), with ``get_warm_cpu_s`` (its CPU seconds: a re-hash of the cached file
  would show here) and ``get_warm_offline`` (1 when a warm get succeeds with the blob remote
  moved away, i.e. nothing was downloaded);
* ``push_finetune_pct``: bytes that reach the remote when the head-only fine-tune is pushed,
  % of the model (<= 2); ``partial_head_remote_pct``: bytes in a fresh clone's store after
  ``load(tensors=[head])`` from the remote, % of the model (<= 5);
* ``mem_register_1g_mib``, ``mem_load_1g_mib`` (and ``_4g_`` with ``--large``): peak
  ``RssAnon`` of a fresh process registering the file / loading it first (benchmarks/
  memory.py's sampler; ``VmHWM`` counts the mapped file too) (<= 256 MiB).

The machine's limits, measured in the same run (``floor_*``): ``floor_disk_vs_cp_fsync``
(1 GiB of one 8 MiB random buffer written sequentially, then fsync of the file and its
directory, against ``cp`` + fsync in the same round; ``floor_disk_write_fsync_s`` in
seconds) and ``floor_blake3_s`` / ``floor_blake3_cpu_s_per_gib`` (one BLAKE3 pass over the
file's bytes in memory on both cores). A row judged against ``cp`` + fsync (or ``save_file``
+ fsync) is *blocked* when the slower floor, as a ratio to that peer, is above its goal.

``"round3"`` in the JSON collects every row: ``goal``, ``stretch``, ``op``, ``min``,
``median``, ``max``, ``pairs``, ``met`` (the median against the goal; false when the row
could not be measured, with ``note`` saying why), ``floor`` and ``blocked``.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    MIB,
    MODEL_NAME,
    Results,
    compile_package,
    cp_fsync,
    fsync_path,
    git_env,
    git_repo,
    log,
    median,
    registry_class,
    rmtree,
    run,
    section,
    store_sizes,
    sync,
)

GIB = 1 << 30
NAME = MODEL_NAME


@dataclass(frozen=True)
class Row:
    """One row of the issue's table: ``r3_<key>`` is the median, ``r3_<key>_min`` the min."""

    key: str
    op: str
    goal: float
    text: str
    peer: str | None = None  # the floor's denominator: "cp" or "save" (None: no floor applies)
    stretch: float | None = None


ROWS = [
    Row("register_file_vs_cp_fsync", "<=", 1.1, "register 1 GiB file, durable <= 1.1x cp + fsync", "cp", 1.0),
    Row("register_file_cpu_s_per_gib", "<=", 1.4, "register 1 GiB file: CPU <= 1.4 s per GiB"),
    Row(
        "register_sd_vs_save_fsync",
        "<=",
        1.5,
        "register a 1 GiB state dict <= 1.5x save_file + fsync",
        "save",
        1.3,
    ),
    Row("tensor_identities_pct", "<=", 3.0, "per-tensor identities <= 3% of register (vs opaque file)"),
    Row("chunking_2v1", ">=", 1.7, "chunking on 2 cores >= 1.7x faster than on 1"),
    Row("remote_files_after_push", "<=", 32, "files on a directory blob remote after pushing 1 GiB <= 32"),
    Row("get_fresh_vs_cp_fsync", "<=", 1.4, "`uniflow get` 1 GiB, fresh cache <= 1.4x cp + fsync", "cp"),
    Row("get_warm_vs_cp_fsync", "<=", 1.0, "the same get, warm cache, new dir <= 1.0x cp + fsync", "cp"),
    Row("get_warm_offline", ">=", 1, "warm get with the blob remote gone still succeeds (nothing fetched)"),
    Row("push_vs_cp_fsync", "<=", 1.25, "directory push of 1 GiB <= 1.25x cp + fsync", "cp"),
    Row("push_dvc_vs_uniflow", ">=", 1.2, "directory push >= 1.2x faster than dvc push + sync"),
    Row("push_finetune_pct", "<=", 2.0, "push after a head-only fine-tune <= 2% of the model's bytes"),
    Row("partial_head_remote_pct", "<=", 5.0, "partial head load from a remote <= 5% of the model's bytes"),
    Row("mem_register_1g_mib", "<=", 256, "register 1 GiB: peak anonymous memory <= 256 MiB"),
    Row("mem_load_1g_mib", "<=", 256, "first load 1 GiB: peak anonymous memory <= 256 MiB"),
    Row("mem_register_4g_mib", "<=", 256, "register 4 GiB: peak anonymous memory <= 256 MiB (--large)"),
    Row("mem_load_4g_mib", "<=", 256, "first load 4 GiB: peak anonymous memory <= 256 MiB (--large)"),
]
FLOOR_KEYS = [
    "floor_disk_vs_cp_fsync",
    "floor_disk_write_fsync_s",
    "floor_blake3_s",
    "floor_blake3_cpu_s_per_gib",
]
#: every figure (medians; each has a ``_min`` beside it)
KEYS = [f"r3_{k}" for k in [*(r.key for r in ROWS), *FLOOR_KEYS, "chunking_2v1_file", "get_warm_cpu_s"]]
#: for benchmarks/report.py (judged on the median)
GOALS = [(f"r3 {r.key}", f"r3_{r.key}", r.op, float(r.goal), f"round 3: {r.text}") for r in ROWS]


# --------------------------------------------------------------------------- recording


def record(res: Results, key: str, values: list[float], note: str) -> None:
    """``r3_<key>`` (median), ``r3_<key>_min`` and the samples."""
    res.add(f"r3_{key}", values, note)
    res.value(f"r3_{key}_min", round(min(values), 6))


def ratios(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den, strict=True)]


class Cpu:
    """CPU seconds (user + system) of this process, all threads, and of its waited children."""

    def __init__(self) -> None:
        self.own, self.kids = self._now(resource.RUSAGE_SELF), self._now(resource.RUSAGE_CHILDREN)

    @staticmethod
    def _now(who: int) -> float:
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    def self_s(self) -> float:
        return self._now(resource.RUSAGE_SELF) - self.own

    def children_s(self) -> float:
        return self._now(resource.RUSAGE_CHILDREN) - self.kids


def timed(fn: Callable[[], object]) -> tuple[float, Cpu]:
    """Wall seconds of ``fn()`` after a ``sync``, and its CPU usage."""
    sync()
    cpu = Cpu()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu


def alternate(i: int, steps: list[Callable[[], None]]) -> None:
    """Run ``steps`` in an order rotated by round ``i``."""
    n = i % len(steps)
    for step in steps[n:] + steps[:n]:
        step()


# --------------------------------------------------------------------------- floors and chunking


def bench_floors(res: Results, data: bytes, f: Path, work: Path, pairs: int) -> None:
    """The disk's sequential write + fsync against cp + fsync, and one BLAKE3 pass on both cores."""
    import blake3

    size = len(data)
    buf = os.urandom(8 * MIB)
    disk, cp, hashed, hash_cpu = [], [], [], []

    def write() -> None:
        out = work / "floor.bin"
        sync()
        t0 = time.perf_counter()
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            left = size
            while left > 0:
                left -= os.write(fd, memoryview(buf)[: min(left, len(buf))])
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_path(work)
        disk.append(time.perf_counter() - t0)
        out.unlink()

    for i in range(pairs):
        alternate(i, [write, lambda: cp.append(cp_fsync(f, work))])
        cpu = Cpu()
        t0 = time.perf_counter()
        blake3.blake3(data, max_threads=2).digest()
        hashed.append(time.perf_counter() - t0)
        hash_cpu.append(cpu.self_s() * GIB / size)
    record(
        res, "floor_disk_vs_cp_fsync", ratios(disk, cp), "1 GiB written (8 MiB buffer) + fsync / cp + fsync"
    )
    record(res, "floor_disk_write_fsync_s", disk, "seconds: sequential write of the file's size + fsync")
    record(res, "floor_blake3_s", hashed, "seconds: BLAKE3 of the file's bytes in memory, 2 threads")
    record(res, "floor_blake3_cpu_s_per_gib", hash_cpu, "CPU seconds per GiB of that BLAKE3 pass")
    res.value("r3_cp_fsync_s", round(median(cp), 6), "seconds: cp + fsync of the file (floor rounds)")


def bench_chunking(res: Results, data: bytes, f: Path, pairs: int) -> None:
    """``cutting.cut`` on 1 thread against 2, with no ranges (FastCDC over every byte: a
    tensor file's tensors are cut at fixed steps, nothing to parallelize): the file's bytes
    in memory, and the file read from disk."""
    from benchmarks.cutting_probe import drain
    from uniflow._storage.cutting import FileReader, MemoryReader, cut
    from uniflow._storage.ingest import FileSource

    fd = os.open(f, os.O_RDONLY)
    try:
        src = FileSource(fd, f)
        ways: dict[str, Callable[[int], int]] = {
            "memory": lambda n: drain(cut(MemoryReader(data), threads=n)),
            "file": lambda n: drain(cut(FileReader(src.size, src.read_into), threads=n)),
        }
        times: dict[tuple[str, int], list[float]] = {(w, n): [] for w in ways for n in (1, 2)}
        ways["file"](2)  # the page cache warm
        for i in range(pairs):
            for way, fn in ways.items():
                for n in (1, 2) if i % 2 == 0 else (2, 1):
                    t0 = time.perf_counter()
                    fn(n)
                    times[(way, n)].append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    record(
        res,
        "chunking_2v1",
        ratios(times[("memory", 1)], times[("memory", 2)]),
        "cut(MemoryReader(file bytes), no ranges): 1 thread / 2 threads",
    )
    record(
        res,
        "chunking_2v1_file",
        ratios(times[("file", 1)], times[("file", 2)]),
        "cut(FileReader(file), no ranges), page cache warm: 1 thread / 2 threads",
    )


# --------------------------------------------------------------------------- register


def named(f: Path, where: Path, name: str) -> Path:
    """``f`` under ``where/name`` (a hard link: the same bytes, the same page cache)."""
    where.mkdir(parents=True, exist_ok=True)
    out = where / name
    out.unlink(missing_ok=True)
    try:
        os.link(f, out)
    except OSError:
        run(["cp", str(f), str(out)])
    return out


def bench_register(res: Results, f: Path, work: Path, pairs: int) -> None:
    """Per round, rotated: cp + fsync, register of the safetensors file, register of the same
    bytes as ``model.bin`` (no tensor identities); each register into a fresh repository."""
    ModelRegistry = registry_class()
    size = f.stat().st_size
    src = {
        "file": named(f, work / "r3-st", "model.safetensors"),
        "opaque": named(f, work / "r3-op", "model.bin"),
    }
    times: dict[str, list[float]] = {"cp": [], "file": [], "opaque": []}
    cpu: list[float] = []

    def register(kind: str) -> None:
        repo = git_repo(work / "r3-reg")
        t, usage = timed(
            lambda: ModelRegistry(repo).register(model=str(src[kind]), name=NAME, version="v1.0.0")
        )
        times[kind].append(t)
        if kind == "file":
            cpu.append((usage.self_s() + usage.children_s()) * GIB / size)  # with its git processes
        if len(times[kind]) == 1:  # the opaque name really has no tensor identities
            tensors = ModelRegistry(repo).repository.manifest(NAME, "v1.0.0").files[0].tensors
            if (tensors is not None) != (kind == "file"):
                raise RuntimeError(f"register of {src[kind].name}: tensors {tensors!r}")
        rmtree(repo)

    for i in range(pairs):
        alternate(
            i,
            [
                lambda: times["cp"].append(cp_fsync(f, work)),
                lambda: register("file"),
                lambda: register("opaque"),
            ],
        )
        log(
            f"    register round {i + 1}/{pairs}: "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
        )
    rmtree(work / "r3-st")
    rmtree(work / "r3-op")
    record(
        res,
        "register_file_vs_cp_fsync",
        ratios(times["file"], times["cp"]),
        "register(model=FILE) into a fresh repo, in process, durable / cp + fsync, same round",
    )
    record(
        res,
        "register_file_cpu_s_per_gib",
        cpu,
        "CPU seconds (getrusage: all threads, and its git processes) of that register per GiB",
    )
    record(
        res,
        "tensor_identities_pct",
        [(r - 1) * 100 for r in ratios(times["file"], times["opaque"])],
        "(register model.safetensors / register the same bytes as model.bin - 1) x 100, same round",
    )
    res.value("r3_register_file_s", round(median(times["file"]), 6), "seconds of that register (median)")


def bench_state_dict(res: Results, work: Path, size_mib: int, pairs: int) -> None:
    """register(model=<state dict>) against save_file + fsync (benchmarks/stream.py's rounds)."""
    from benchmarks import stream

    sd = stream.state_dict(size_mib * MIB)
    samples, _cpu = stream.measure_rounds(work, sd, pairs, kinds=("save", "stream"))
    record(
        res,
        "register_sd_vs_save_fsync",
        ratios(samples["stream"], samples["save"]),
        "register(model=<state dict>) into a fresh repo / safetensors.torch.save_file + fsync, same round",
    )
    res.value(
        "r3_save_fsync_sd_s", round(median(samples["save"]), 6), "seconds of save_file + fsync (median)"
    )


# --------------------------------------------------------------------------- remote


@dataclass
class Remote:
    """A bare Git repository and a directory blob remote, with a publisher clone holding the
    model (``v1.0.0`` in production), registered but not pushed."""

    bare: Path
    blobs: Path
    clone: Path
    env: dict[str, str]

    @classmethod
    def publish(cls, work: Path, f: Path) -> Remote:
        from benchmarks.remote import _publisher

        rmtree(work)
        (work / "srv").mkdir(parents=True)
        bare, blobs, clone = _publisher(work / "srv", work / "publisher")
        with registry_class()(clone) as reg:
            reg.register(model=str(named(f, work / "src", "model.safetensors")), name=NAME, version="v1.0.0")
            reg.promote(NAME, "v1.0.0", "production")
        return cls(bare, blobs, clone, {**git_env(), "UNIFLOW_CACHE_DIR": str(work / "user-cache")})

    def get(self, cmd: list[str], out: Path, check: bool = True) -> int:
        """``uniflow get`` of the production version into ``out``: the bytes written."""
        argv = [*cmd, "get", f"file://{self.bare}", NAME, "--stage", "production", "-o", str(out)]
        proc = run(argv, env=self.env, check=check, timeout=3600)
        return sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if proc.returncode == 0 else -1


def new_bytes(before: dict[str, int], after: dict[str, int]) -> int:
    """Bytes of the files that appeared or grew."""
    return sum(n - before.get(p, 0) for p, n in after.items() if n > before.get(p, 0))


def finetune_and_partial(res: Results, r: Remote, head: Path, cmd: list[str], work: Path, size: int) -> None:
    """Push of the head-only fine-tune (bytes that reach the remote), then a partial head load
    in a fresh clone (bytes that reach its store)."""
    from benchmarks.harness import file_sizes
    from benchmarks.tensors import HEAD

    registry_class()(r.clone).register(
        model=str(named(head, work / "head", "model.safetensors")), name=NAME, version="v2.0.0"
    )
    before = file_sizes(r.blobs)
    run([*cmd, "push"], cwd=r.clone, env=r.env, timeout=3600)
    sent = new_bytes(before, file_sizes(r.blobs))
    record(
        res,
        "push_finetune_pct",
        [100 * sent / size],
        "bytes new on the remote after pushing v2 (head changed)",
    )
    clone = work / "partial"
    run(["git", "clone", "-q", str(r.bare), str(clone)], env=r.env)
    reg = registry_class()(clone)
    reg.pull()
    got = reg.load(NAME, "v2.0.0", tensors=[HEAD])
    if list(got) != [HEAD]:
        raise RuntimeError(f"partial load gave {list(got)}")
    fetched = sum(store_sizes(clone / ".git" / "uniflow").values())
    record(
        res,
        "partial_head_remote_pct",
        [100 * fetched / size],
        "bytes in a fresh clone's store after load(tensors=[head])",
    )
    rmtree(clone)


def dvc_publisher(work: Path, f: Path, bin_dir: Path) -> Any:
    """benchmarks/transfer.py's DVC scenario on a directory remote, the file added and
    committed (not pushed)."""
    from benchmarks.transfer import Dvc

    d = Dvc(work, "dir", None, bin_dir)
    d.publish(f, "v1.0.0")
    return d


def offline_get(res: Results, r: Remote, cmd: list[str], out: Path, size: int) -> None:
    """A warm get with the blob remote moved away: it succeeds only if nothing is fetched."""
    away = r.blobs.with_name("blobs-away")
    r.blobs.rename(away)
    try:
        got = r.get(cmd, out, check=False)
    finally:
        away.rename(r.blobs)
    record(
        res, "get_warm_offline", [1.0 if got == size else 0.0], "1: a warm get succeeded with no blob remote"
    )


class RemoteRounds:
    """Per round, a fresh publisher: cp + fsync against `uniflow push` (and `dvc push` +
    sync), then against a fresh-cache get, then against a warm get into a new directory."""

    KINDS = ("cp_push", "push", "dvc", "cp_fresh", "fresh", "cp_warm", "warm")

    def __init__(self, files: dict[str, Path], work: Path, cmd: list[str], dvc_bin: Path | None) -> None:
        self.files, self.work, self.cmd, self.dvc_bin = files, work, cmd, dvc_bin
        self.f = files["base"]
        self.size = self.f.stat().st_size
        self.t: dict[str, list[float]] = {k: [] for k in self.KINDS}
        self.nfiles: list[float] = []
        self.warm_cpu: list[float] = []

    def cp(self, key: str) -> Callable[[], None]:
        return lambda: self.t[key].append(cp_fsync(self.f, self.work))

    def step(
        self, key: str, fn: Callable[[], object], usage: list[float] | None = None
    ) -> Callable[[], None]:
        def go() -> None:
            s, u = timed(fn)
            self.t[key].append(s)
            if usage is not None:
                usage.append(u.children_s())

        return go

    def get(self, r: Remote, out: Path) -> None:
        n = r.get(self.cmd, out)
        if n != self.size:
            raise RuntimeError(f"uniflow get wrote {n} bytes, expected {self.size}")

    def round(self, res: Results, i: int) -> None:
        from benchmarks.harness import file_sizes

        w = self.work / "r3-remote"
        r = Remote.publish(w, self.f)
        push = [*self.cmd, "push"]
        steps = [
            self.cp("cp_push"),
            self.step("push", lambda: run(push, cwd=r.clone, env=r.env, timeout=3600)),
        ]
        if self.dvc_bin is not None:
            d = dvc_publisher(self.work / "r3-dvc", self.f, self.dvc_bin)
            dvc = d.push_cmds()[0][0]
            steps.append(self.step("dvc", lambda: (run(dvc, cwd=d.pub, env=d.env, timeout=3600), sync())))
        alternate(i, steps)
        rmtree(self.work / "r3-dvc")
        self.nfiles.append(len(file_sizes(r.blobs)))
        if i == 0:
            finetune_and_partial(res, r, self.files["head"], self.cmd, w, self.size)
        alternate(i, [self.cp("cp_fresh"), self.step("fresh", lambda: self.get(r, w / "out1"))])
        alternate(i, [self.cp("cp_warm"), self.step("warm", lambda: self.get(r, w / "out2"), self.warm_cpu)])
        if i == 0:
            offline_get(res, r, self.cmd, w / "out3", self.size)
        log(f"    remote round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in self.t.items() if v))
        rmtree(w)

    def record(self, res: Results) -> None:
        t = self.t
        record(
            res, "push_vs_cp_fsync", ratios(t["push"], t["cp_push"]), "`uniflow push` (process) / cp + fsync"
        )
        record(
            res,
            "remote_files_after_push",
            self.nfiles,
            f"files on the blob remote after pushing {self.size} B",
        )
        record(
            res,
            "get_fresh_vs_cp_fsync",
            ratios(t["fresh"], t["cp_fresh"]),
            "`uniflow get`, fresh / cp + fsync",
        )
        record(
            res,
            "get_warm_vs_cp_fsync",
            ratios(t["warm"], t["cp_warm"]),
            "the get again, new dir / cp + fsync",
        )
        record(res, "get_warm_cpu_s", self.warm_cpu, "CPU seconds (user + system) of the warm get process")
        if self.dvc_bin is not None:
            record(
                res, "push_dvc_vs_uniflow", ratios(t["dvc"], t["push"]), "(dvc push + sync) / uniflow push"
            )


def bench_remote(
    res: Results, files: dict[str, Path], work: Path, cmd: list[str], pairs: int, dvc_bin: Path | None
) -> None:
    """The remote rows (see :class:`RemoteRounds`), the CLI's modules byte-compiled first as
    ``pip install`` leaves them (a ``PYTHONDONTWRITEBYTECODE=1`` environment would otherwise
    compile every module in every timed process)."""
    compile_package()
    rounds = RemoteRounds(files, work, cmd, dvc_bin)
    for i in range(pairs):
        rounds.round(res, i)
    rounds.record(res)


# --------------------------------------------------------------------------- memory


def bench_mem(res: Results, cache: Path, work: Path, size_mib: int, runs: int, large: bool) -> None:
    """Peak RssAnon of register and of a first load in fresh processes (benchmarks/memory.py)."""
    import shutil

    from benchmarks import memory
    from benchmarks.modelfile import model_files

    sizes = {"1g": size_mib}
    if large:
        need = 3 * 4 * size_mib * MIB + GIB  # the file, its chunks, the loaded copy
        free = shutil.disk_usage(cache).free
        if free < need:
            raise RuntimeError(f"--large needs {need >> 20} MiB free in {cache}, {free >> 20} MiB are")
        sizes["4g"] = 4 * size_mib
    tally = memory.Tally()
    for label, mib in sizes.items():
        f = model_files(cache, mib, kinds=("base",))["base"]
        for _ in range(runs):
            memory.file_cycle(tally, label, f, work, with_export=False)
        for what in ("register", "load"):
            key = f"mem_{what}_{label}_mib"
            record(res, key, tally.mib[key], f"MiB: peak RssAnon of a fresh process, {what} of {mib} MiB")


# --------------------------------------------------------------------------- summary and driver


def floor_of(res: Results, row: Row) -> float | None:
    """The slower machine limit as a ratio to the row's peer (None: no floor applies): for
    ``cp`` + fsync the disk's write as paired in the same rounds, else the medians'."""
    b3, disk = res.get("r3_floor_blake3_s"), res.get("r3_floor_disk_write_fsync_s")
    if row.peer == "cp":
        den, disk_ratio = res.get("r3_cp_fsync_s"), res.get("r3_floor_disk_vs_cp_fsync")
    elif row.peer == "save":
        den = res.get("r3_save_fsync_sd_s")
        disk_ratio = disk / den if disk is not None and den else None
    else:
        return None
    if not den or b3 is None or disk_ratio is None:
        return None
    return round(max(disk_ratio, b3 / den), 4)


def summarize(res: Results, pairs: int) -> None:
    """``res.values["round3"]``: every row with its goal, min, median, max and whether it is met."""
    out: dict[str, Any] = {}
    for row in ROWS:
        key = f"r3_{row.key}"
        med, samples = res.get(key), res.samples.get(key)
        met = med is not None and (med <= row.goal if row.op == "<=" else med >= row.goal)
        floor = floor_of(res, row)
        out[row.key] = {
            "goal": row.goal,
            "stretch": row.stretch,
            "op": row.op,
            "min": res.get(f"{key}_min"),
            "median": med,
            "max": round(max(samples), 6) if samples else None,
            "pairs": len(samples) if samples else 0,
            "met": met,
            "floor": floor,
            "blocked": floor is not None and floor > row.goal,
            "text": row.text,
            "note": res.notes.get(key),
        }
    res.value("round3", out, f"issue 25's Numbers table; ratios of {pairs} interleaved pairs")


def in_memory(res: Results, f: Path, work: Path, pairs: int) -> None:
    """The sections that hold the file's bytes in memory: the floors and chunking."""
    data = f.read_bytes()
    keys = [f"r3_{k}" for k in FLOOR_KEYS]
    section(res, keys, "round3: machine floors")(lambda: bench_floors(res, data, f, work, pairs))
    keys = ["r3_chunking_2v1", "r3_chunking_2v1_file"]
    section(res, keys, "round3: chunking")(lambda: bench_chunking(res, data, f, pairs))


def bench_round3(
    res: Results, cache: Path, work: Path, files: dict[str, Path], opts: dict[str, Any], cmd: list[str] | None
) -> None:
    """Every figure of this module; ``opts``: size_mib, pairs, mem_runs, large, dvc_bin (or
    None with dvc_why)."""
    f, pairs = files["base"], opts["pairs"]

    def keys(*names: str) -> list[str]:
        return [f"r3_{n}" for n in names]

    in_memory(res, f, work, pairs)
    section(
        res,
        keys("register_file_vs_cp_fsync", "register_file_cpu_s_per_gib", "tensor_identities_pct"),
        "round3: register",
    )(lambda: bench_register(res, f, work, pairs))
    section(res, keys("register_sd_vs_save_fsync"), "round3: register a state dict")(
        lambda: bench_state_dict(res, work, opts["size_mib"], pairs)
    )
    remote_keys = keys(
        *(r.key for r in ROWS if "push" in r.key or "get" in r.key or "partial" in r.key), "get_warm_cpu_s"
    )
    if cmd is None:
        res.fail(remote_keys, "no working uniflow CLI")
    else:
        section(res, remote_keys, "round3: remote")(
            lambda: bench_remote(res, files, work, cmd, pairs, opts.get("dvc_bin"))
        )
    if opts.get("dvc_bin") is None:
        res.fail(keys("push_dvc_vs_uniflow"), opts.get("dvc_why") or "dvc not measured: run with --peers")
    mem_keys = keys(*(r.key for r in ROWS if r.key.startswith("mem_")))
    section(res, mem_keys, "round3: memory")(
        lambda: bench_mem(res, cache, work, opts["size_mib"], opts["mem_runs"], opts["large"])
    )
    if not opts["large"]:
        res.fail(keys("mem_register_4g_mib", "mem_load_4g_mib"), "4 GiB not measured: run with --large")
    summarize(res, pairs)


def print_rows(res: Results) -> None:
    """The round-3 table: each row's goal, min, median and verdict."""
    rows = res.values.get("round3")
    if not isinstance(rows, dict):
        return
    print("\nround 3 (issue 25): per-round ratios")
    for key, r in rows.items():
        fmt = "n/a" if r["median"] is None else f"min {r['min']:.4g}  median {r['median']:.4g}"
        verdict = "met" if r["met"] else "blocked" if r["blocked"] else "not met"
        print(f"  {key:<30} {r['op']} {r['goal']:<6g} {fmt:<32} {verdict}")
