"""Peak anonymous memory of whole processes (issue 14 item 5: "memory stays flat").

:func:`peak_anon_kib` runs a command and returns the peak ``RssAnon`` of its process (KiB)
and its wall time. :func:`measure` returns the same with the sampler's own figures.

Why sampling: Linux keeps no high-water mark of anonymous memory. ``VmHWM`` /
``ru_maxrss`` count file-backed pages too, and uniflow maps model files to read them, so a
1 GiB register shows ~1 GiB there whatever it allocates. This kernel's memory cgroup is v1
(``memory.max_usage_in_bytes`` counts page cache; there is no ``memory.peak``), and the
cgroup v2 hierarchy has no memory controller. So two sampler processes, each pinned to one
CPU and run under ``SCHED_FIFO`` when allowed (root), read ``/proc/PID/status``
(``RssAnon``, ``RssShmem``, ``VmHWM``) every ``interval`` seconds through one descriptor
kept open (``pread`` at offset 0 regenerates the file). They are started and ready before
the command is spawned, and stop when its memory is gone. Processes, not threads of this
one: a sampler thread would wait for the GIL whenever the thread holding it is preempted.

Error bound: every sample is a true value, so the figure is a lower bound of the peak, and
it can only miss memory that was faulted in and freed again between two samples: at most
(longest gap) x (fastest fault-in rate, ~1 MiB per ms here). ``max_gap_ms`` is the longest
time without a sample from either sampler (1-2 ms on a quiet machine; tens of ms when both
vCPUs are held up by the hypervisor or long kernel I/O paths, when the command mostly waits
too). :func:`calibrate` checks the worst case: a buffer of N MiB allocated, touched and
freed at once must read N MiB above ``python -c pass``. ``VmHWM`` (kept as ``*_hwm_mib``) is
an exact upper bound: where it is itself small (load, export) the figure is exact within
it. The children of the process's main thread are added in (a register runs one
``git status``); their own children are not.

Figures (MiB, median of the runs, samples kept; sizes ``1g``/``4g`` are 8/32 MiB in
``--smoke``): ``mem_import_mib`` (``python -c "import uniflow"``), ``mem_register_1g_mib``,
``mem_register_4g_mib`` (``register(model=FILE)`` in a fresh process and repository),
``mem_load_1g_mib``, ``mem_load_4g_mib`` (a first ``load_path`` in a fresh process, empty
cache: chunks verified and assembled), ``mem_export_1g_mib`` (``uniflow models export``, empty
cache), ``mem_register_sd_1g_extra_mib`` (``register(model=<1 GiB torch state dict>)``: peak
minus ``RssAnon`` just before the call, i.e. minus torch and the state dict itself),
``mem_load_sd_1g_extra_mib`` (a first ``load()`` of it: peak minus ``RssAnon`` after, the
tensors alive), ``mem_get_{1g,4g}_mib`` (``uniflow get`` from a bare repository and a
directory blob remote, fresh per-user cache), ``mem_clone_load_{1g,4g}_mib`` (a first
``load_path`` in a fresh clone, every chunk fetched from the blob remote),
``mem_register_growth_mib`` / ``mem_load_growth_mib`` (4g minus 1g), and the method's own
``mem_calibration_error_mib`` and ``mem_sampler_max_gap_ms``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import MIB, Results, git_env, git_repo, log, rmtree, run

KIB = 1024
MODEL = "bench_mem"
GOAL_MIB = 256.0

KEYS = [
    "mem_import_mib",
    "mem_register_1g_mib",
    "mem_register_4g_mib",
    "mem_load_1g_mib",
    "mem_load_4g_mib",
    "mem_export_1g_mib",
    "mem_register_sd_1g_mib",
    "mem_register_sd_1g_extra_mib",
    "mem_load_sd_1g_mib",
    "mem_load_sd_1g_extra_mib",
    "mem_get_1g_mib",
    "mem_get_4g_mib",
    "mem_clone_load_1g_mib",
    "mem_clone_load_4g_mib",
    "mem_register_growth_mib",
    "mem_load_growth_mib",
    "mem_get_growth_mib",
    "mem_clone_load_growth_mib",
    "mem_calibration_error_mib",
    "mem_sampler_max_gap_ms",
]

GOALS = [
    ("register memory", "mem_register_4g_mib", "<=", GOAL_MIB, "register 4 GiB: peak anon <= 256 MiB"),
    ("first load memory", "mem_load_4g_mib", "<=", GOAL_MIB, "first load 4 GiB: peak anon <= 256 MiB"),
    (
        "register memory flat",
        "mem_register_growth_mib",
        "<=",
        16.0,
        "register peak anon 4 GiB minus 1 GiB <= 16 MiB",
    ),
    (
        "load memory flat",
        "mem_load_growth_mib",
        "<=",
        16.0,
        "first load peak anon 4 GiB minus 1 GiB <= 16 MiB",
    ),
]


# --------------------------------------------------------------------------- the sampler


@dataclass(frozen=True)
class Peak:
    """What :func:`measure` saw of one process."""

    anon_kib: int  # peak RssAnon of the process plus its children
    shmem_kib: int  # peak RssShmem, likewise
    hwm_kib: int  # the last VmHWM seen: anon + file + shmem high-water, for contrast
    wall: float  # seconds from spawn to exit
    samples: int  # over all samplers
    max_gap_ms: float  # longest time without a sample from any sampler, spawn to last sample
    samplers: int  # sampler processes (one pinned to each of the first two CPUs)
    realtime: bool  # every sampler ran under SCHED_FIFO
    stdout: str
    self_kib: int = 0  # peak RssAnon of the process alone
    children: int = 0  # child processes seen (by any one sampler)
    at_peak: tuple[Any, ...] = ()  # (pid, RssAnon KiB, cmdline) of children in the peak sum


# One sampler process: pinned to one CPU, SCHED_FIFO if allowed; says "ready", then is told
# the PID on stdin; reads /proc/PID/status through one descriptor until the mm is gone (zombie)
# or the process is reaped, and at each sample also the status of the process's children
# (those of its main thread, from /proc/PID/task/PID/children; e.g. the `git status` of a
# register), summed. A child counts once it has exec'd (its cmdline differs from the
# parent's): between fork and exec it shares the parent's pages (vfork: its very memory), and
# would count them twice. Prints a JSON line: maxima, sample count and sample times.
_SAMPLER = r"""
import json, os, sys, time
cpu, interval = int(sys.argv[1]), float(sys.argv[2])
try:
    os.sched_setaffinity(0, {cpu})
except OSError:
    pass
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    rt = True
except OSError:
    rt = False
names = (b"RssAnon:", b"RssShmem:", b"VmHWM:")


def fields(fd):
    try:
        data = os.pread(fd, 4096, 0)
    except OSError:
        return None
    vals = []
    for name in names:
        i = data.find(name)
        if i < 0:
            return None
        vals.append(int(data[i + len(name) : data.find(b"kB", i)]))
    return vals


top = [0, 0, 0, 0]  # RssAnon of the tree, RssShmem of the tree, VmHWM, RssAnon of the process
times = []
kids = {}  # child pid -> status descriptor once it has exec'd, else None
seen = 0
at_peak = []  # (pid, RssAnon, cmdline) of the children counted in the largest sum


def cmdline(p):
    try:
        with open(b"/proc/" + p + b"/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


print("ready", flush=True)
line = sys.stdin.readline()
try:
    pid = int(line)
    own = cmdline(str(pid).encode())
    fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
    cfd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY)
except (OSError, ValueError):
    fd = None
while fd is not None:
    vals = fields(fd)
    now = time.monotonic()
    if vals is None:
        break
    anon, shmem = vals[0], vals[1]
    try:
        listed = os.pread(cfd, 65536, 0).split()
    except OSError:
        listed = []
    for c in listed:
        if c not in kids:
            seen += 1
            kids[c] = None
        if not own:  # read too early: exec sets up the arguments after Popen has returned
            own = cmdline(str(pid).encode())
        if kids[c] is None and own:
            cmd = cmdline(c)
            if cmd and cmd != own:  # exec'd: its own memory from now on
                try:
                    kids[c] = os.open(b"/proc/" + c + b"/status", os.O_RDONLY)
                except OSError:
                    pass
    for c in [c for c in kids if c not in listed]:
        if kids[c] is not None:
            os.close(kids[c])
        del kids[c]
    counted = []
    for c, kfd in kids.items():
        kv = fields(kfd) if kfd is not None else None
        if kv is not None:
            anon += kv[0]
            shmem += kv[1]
            counted.append((c.decode(), kv[0]))
    times.append(now)
    if anon > top[0] and counted:
        at_peak = [(c, k, (cmdline(c.encode()) or b"")[:60].decode(errors="replace")) for c, k in counted]
    top = [max(top[0], anon), max(top[1], shmem), max(top[2], vals[2]), max(top[3], vals[0])]
    time.sleep(interval)
json.dump({"top": top, "times": times, "rt": rt, "children": seen, "at_peak": at_peak}, sys.stdout)
"""


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))[:2]
    except (AttributeError, OSError):
        return [0]


def measure(
    argv: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    *,
    interval: float = 0.001,
    timeout: float = 3600,
) -> Peak:
    """Run ``argv`` (it must exit 0) while sampling its memory; see the module docstring."""
    samplers = [
        subprocess.Popen(
            [sys.executable, "-I", "-c", _SAMPLER, str(cpu), str(interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for cpu in _cpus()
    ]
    try:
        for s in samplers:  # started and warm before the command exists
            assert s.stdout is not None
            if s.stdout.readline().strip() != "ready":
                raise RuntimeError("a memory sampler failed to start")
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            t0 = time.monotonic()
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            spawned = time.monotonic()  # Popen returns once the child has exec'd
            for s in samplers:
                assert s.stdin is not None
                s.stdin.write(f"{proc.pid}\n")
                s.stdin.flush()
            try:
                rc = proc.wait(timeout=timeout)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            wall = time.monotonic() - t0
            reports = [json.loads(s.communicate(timeout=60)[0]) for s in samplers]
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace")
            if rc != 0:
                tail = err.read().decode(errors="replace").strip()[-800:]
                raise RuntimeError(f"{' '.join(map(str, argv))[:200]} exited {rc}: {tail}")
    finally:
        for s in samplers:
            if s.poll() is None:
                s.kill()
                s.wait()
    times = sorted(t for r in reports for t in r["times"])
    if not times:
        raise RuntimeError(f"{' '.join(map(str, argv))[:200]} exited before it could be sampled")
    edges = [spawned, *times]
    gap = max(b - a for a, b in zip(edges, edges[1:], strict=False))
    return Peak(
        max(r["top"][0] for r in reports),
        max(r["top"][1] for r in reports),
        max(r["top"][2] for r in reports),
        wall,
        len(times),
        round(gap * 1000, 3),
        len(samplers),
        all(r["rt"] for r in reports),
        stdout,
        max(r["top"][3] for r in reports),
        max(r["children"] for r in reports),
        tuple(max(reports, key=lambda r: r["top"][0])["at_peak"]),
    )


def peak_anon_kib(
    argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, float]:
    """Peak ``RssAnon`` (KiB) of the process running ``argv`` (which must exit 0) plus its
    children, and its wall time in seconds. Sampled every 1 ms; see the module docstring
    for the error bound."""
    p = measure(argv, cwd, env)
    return p.anon_kib, p.wall


# --------------------------------------------------------------------------- the workloads

# Each runs in a fresh interpreter: ``python -c CODE ARGS``.
_IMPORT = "import uniflow"
_REGISTER = (
    "import sys\nfrom uniflow import ModelRegistry\n"
    "ModelRegistry(sys.argv[1]).register(model=sys.argv[2], name=sys.argv[3], version='v1.0.0')\n"
)
_LOAD = (
    "import sys\nfrom uniflow import ModelRegistry\n"
    "print(ModelRegistry(sys.argv[1]).load_path(sys.argv[2], version='v1.0.0'))\n"
)
# A state dict of float32 tensors of 256 x 1024 (1 MiB each) summing to argv[2] bytes; prints
# RssAnon just before register so that torch and the tensors themselves can be subtracted.
_REGISTER_SD = (
    "import sys, torch\nfrom uniflow import ModelRegistry\n"
    "torch.manual_seed(0)\n"
    "sd = {f'layers.{i:04d}.weight': torch.randn(256, 1024) for i in range(int(sys.argv[2]) >> 20)}\n"
    "status = open('/proc/self/status').read()\n"
    "print([ln.split()[1] for ln in status.splitlines() if ln.startswith('RssAnon:')][0])\n"
    "ModelRegistry(sys.argv[1]).register(model=sd, name=sys.argv[3], version='v1.0.0')\n"
)
# A first load() of that version: the state dict back (safetensors maps the verified file, so
# the tensors are file-backed); prints RssAnon with the tensors alive, and their bytes.
_LOAD_SD = (
    "import sys, torch\nfrom uniflow import ModelRegistry\n"
    "sd = ModelRegistry(sys.argv[1]).load(sys.argv[2], version='v1.0.0')\n"
    "status = open('/proc/self/status').read()\n"
    "print([ln.split()[1] for ln in status.splitlines() if ln.startswith('RssAnon:')][0])\n"
    "print(sum(t.nbytes for t in sd.values()))\n"
)
_PULL = "import sys\nfrom uniflow import ModelRegistry\nModelRegistry(sys.argv[1]).pull()\n"
_LOAD_STAGE = (
    "import sys\nfrom uniflow import ModelRegistry\n"
    "print(ModelRegistry(sys.argv[1]).load_path(sys.argv[2], stage='production'))\n"
)
_CALIBRATE = "import sys\nx = b'\\x01' * (int(sys.argv[1]) << 20)\ndel x\n"


def _mib(kib: int | float) -> float:
    return round(kib / KIB, 2)


class Tally:
    """Samples per key (MiB) and the worst sampler gap seen."""

    def __init__(self) -> None:
        self.mib: dict[str, list[float]] = {}
        self.hwm: dict[str, list[float]] = {}
        self.max_gap_ms = 0.0
        self.realtime = True

    def take(self, key: str, p: Peak, minus_kib: int = 0) -> Peak:
        self.mib.setdefault(key, []).append(_mib(p.anon_kib - minus_kib))
        self.hwm.setdefault(key, []).append(_mib(p.hwm_kib))
        self.max_gap_ms = max(self.max_gap_ms, p.max_gap_ms)
        self.realtime = self.realtime and p.realtime
        if p.anon_kib - p.self_kib > 1024:
            log(f"    {key}: children at the peak: {p.at_peak}")
        if p.shmem_kib > 1024:
            log(f"    {key}: note RssShmem peaked at {_mib(p.shmem_kib)} MiB")
        log(
            f"    {key}: peak RssAnon {_mib(p.anon_kib)} MiB{f' (-{_mib(minus_kib)})' if minus_kib else ''}"
            f" (the process alone {_mib(p.self_kib)}, {p.children} children), VmHWM {_mib(p.hwm_kib)} MiB, "
            f"{p.wall:.2f} s, {p.samples} samples, max gap {p.max_gap_ms:.2f} ms"
        )
        return p


def _cache_empty(repo: Path) -> bool:
    files = repo / ".git" / "uniflow" / "cache" / "files"
    return not files.exists() or not any(files.rglob("*"))


def file_cycle(tally: Tally, label: str, f: Path, work: Path, with_export: bool) -> None:
    """register FILE, first load_path, then (cache emptied) a first `uniflow models export`,
    each in its own process, in one fresh repository."""
    py = sys.executable
    repo = git_repo(work / "mem-repo")
    env = git_env()
    try:
        tally.take(
            f"mem_register_{label}_mib", measure([py, "-c", _REGISTER, str(repo), str(f), MODEL], env=env)
        )
        if not _cache_empty(repo):
            raise RuntimeError("register left files in the cache: the load would not be a first load")
        p = tally.take(f"mem_load_{label}_mib", measure([py, "-c", _LOAD, str(repo), MODEL], env=env))
        loaded = Path(p.stdout.strip())
        size = sum(x.stat().st_size for x in loaded.rglob("*") if x.is_file())
        if size != f.stat().st_size:
            raise RuntimeError(f"load_path gave {size} bytes, expected {f.stat().st_size}")
        if with_export:
            rmtree(repo / ".git" / "uniflow" / "cache")
            cli = Path(py).parent / "uniflow"
            cmd = [str(cli)] if cli.exists() else [py, "-m", "uniflow"]
            dest = work / "mem-export"
            rmtree(dest)
            tally.take(
                f"mem_export_{label}_mib",
                measure([*cmd, "models", "export", MODEL, "v1.0.0", str(dest)], cwd=repo, env=env),
            )
            rmtree(dest)
    finally:
        rmtree(repo)


def _remote_cycle(tally: Tally, label: str, f: Path, work: Path) -> None:
    """FILE published to a bare repository + directory blob remote (benchmarks/remote.py);
    then `uniflow get` with a fresh per-user cache, and a first load_path in a fresh clone
    (refs pulled beforehand, unmeasured): every chunk fetched, verified, stored, assembled."""
    from benchmarks import remote

    py = sys.executable
    cli = Path(py).parent / "uniflow"
    cmd = [str(cli)] if cli.exists() else [py, "-m", "uniflow"]
    w = work / "mem-remote"
    rmtree(w)
    w.mkdir(parents=True)
    try:
        bare, _blobs = remote._publish(w, f)
        env = {**git_env(), "UNIFLOW_CACHE_DIR": str(w / "user-cache")}
        get = [*cmd, "get", f"file://{bare}", remote.NAME, "--stage", "production", "-o", str(w / "out")]
        tally.take(f"mem_get_{label}_mib", measure(get, env=env))
        rmtree(w / "out")
        rmtree(w / "user-cache")
        clone = w / "clone"
        run(["git", "clone", "-q", str(bare), str(clone)], env=git_env())
        run([py, "-c", _PULL, str(clone)], env=git_env())
        load = [py, "-c", _LOAD_STAGE, str(clone), remote.NAME]
        tally.take(f"mem_clone_load_{label}_mib", measure(load, env=git_env()))
    finally:
        rmtree(w)


def _state_dict_cycle(tally: Tally, label: str, size_bytes: int, work: Path) -> None:
    py = sys.executable
    repo = git_repo(work / "mem-sd")
    try:
        p = measure([py, "-c", _REGISTER_SD, str(repo), str(size_bytes), MODEL], env=git_env())
        before = int(p.stdout.split()[0])
        tally.take(f"mem_register_sd_{label}_mib", p)
        tally.take(f"mem_register_sd_{label}_extra_mib", p, minus_kib=before)
        if not _cache_empty(repo):
            raise RuntimeError("register left files in the cache: the load would not be a first load")
        p = measure([py, "-c", _LOAD_SD, str(repo), MODEL], env=git_env())
        after, nbytes = (int(x) for x in p.stdout.split())
        if nbytes != size_bytes:
            raise RuntimeError(f"load() gave {nbytes} bytes of tensors, expected {size_bytes}")
        tally.take(f"mem_load_sd_{label}_mib", p)
        tally.take(f"mem_load_sd_{label}_extra_mib", p, minus_kib=after)
    finally:
        rmtree(repo)


def calibrate(tally: Tally, mib: int, runs: int) -> None:
    """A buffer of ``mib`` MiB allocated, touched and freed at once must read ``mib`` MiB above
    ``python -c pass``; the shortfall (or excess) is ``mem_calibration_error_mib``."""
    py = sys.executable
    for _ in range(runs):
        base = measure([py, "-c", "pass"]).anon_kib
        p = measure([py, "-c", _CALIBRATE, str(mib)])
        tally.take("mem_calibration_error_mib", p, minus_kib=base + mib * KIB)


# --------------------------------------------------------------------------- the section


def add_args(ap: argparse.ArgumentParser) -> None:
    """The options of this section (called by benchmarks/run.py)."""
    ap.add_argument(
        "--mem-4g",
        action="store_true",
        help="memory section: also the 4 GiB file in --quick (always in full mode)",
    )


def plan(mode_name: str, size_mib: int, big: bool) -> dict[str, Any]:
    """Sizes and run counts: 1 GiB (or --size-mib) and 4x that; tiny in --smoke."""
    if mode_name == "smoke":
        return {"sizes": {"1g": size_mib, "4g": 4 * size_mib}, "runs": 1, "sd_mib": size_mib, "cal_mib": 64}
    sizes = {"1g": size_mib}
    if mode_name == "full" or big:
        sizes["4g"] = 4 * size_mib
    return {"sizes": sizes, "runs": 3 if mode_name == "full" else 1, "sd_mib": size_mib, "cal_mib": 256}


def bench_memory(res: Results, cache: Path, work: Path, mode_name: str, size_mib: int, big: bool) -> None:
    """Every ``mem_*`` key (see the module docstring)."""
    from benchmarks.modelfile import model_files

    p = plan(mode_name, size_mib, big)
    runs = p["runs"]
    tally = Tally()
    calibrate(tally, p["cal_mib"], runs)
    for _ in range(runs):
        tally.take("mem_import_mib", measure([sys.executable, "-c", _IMPORT]))
    for label, mib in p["sizes"].items():
        f = model_files(cache, mib, kinds=("base",))["base"]
        log(f"    memory: {label} = {f.name}")
        for _ in range(runs if label == "1g" else max(runs - 1, 1)):
            file_cycle(tally, label, f, work, with_export=label == "1g")
        _remote_cycle(tally, label, f, work)
    try:
        import torch  # noqa: F401
    except ImportError:
        res.fail(["mem_register_sd_1g_extra_mib"], "torch is not installed")
    else:
        for _ in range(runs):
            _state_dict_cycle(tally, "1g", p["sd_mib"] * MIB, work)

    notes = {
        "mem_import_mib": "peak RssAnon of `python -c 'import uniflow'`: the floor of every figure here",
        "mem_register_1g_mib": f"peak RssAnon of a fresh process running register(model=FILE) "
        f"({p['sizes']['1g']} MiB safetensors) into a fresh repository",
        "mem_load_1g_mib": "peak RssAnon of a fresh process running load_path() of that version, "
        "empty cache (every chunk read, verified, assembled)",
        "mem_export_1g_mib": "peak RssAnon of `uniflow models export NAME v1.0.0 DEST`, empty cache",
        "mem_get_1g_mib": "peak RssAnon of `uniflow get file://BARE NAME --stage production -o OUT`, "
        "fresh per-user cache, directory blob remote",
        "mem_clone_load_1g_mib": "peak RssAnon of a first load_path in a fresh clone (refs pulled): "
        "every chunk fetched from the directory blob remote, verified, stored and assembled",
        "mem_register_sd_1g_mib": f"register(model=<{p['sd_mib']} MiB torch state dict>): whole peak",
        "mem_register_sd_1g_extra_mib": "the same peak minus RssAnon just before register "
        "(torch and the state dict itself)",
        "mem_load_sd_1g_mib": "a first load() of that state dict in a fresh process, empty cache: whole "
        "peak (the tensors safetensors returns map the verified cached file: file-backed, not anon)",
        "mem_load_sd_1g_extra_mib": "the same peak minus RssAnon after the load, the tensors alive",
        "mem_calibration_error_mib": f"a {p['cal_mib']} MiB buffer allocated, touched and freed at once: "
        "measured peak minus (python -c pass + the buffer); the sampler's error",
    }
    if "4g" in p["sizes"]:
        notes["mem_register_4g_mib"] = f"as mem_register_1g_mib, {p['sizes']['4g']} MiB file"
        notes["mem_load_4g_mib"] = f"as mem_load_1g_mib, {p['sizes']['4g']} MiB file"
        notes["mem_get_4g_mib"] = f"as mem_get_1g_mib, {p['sizes']['4g']} MiB file"
        notes["mem_clone_load_4g_mib"] = f"as mem_clone_load_1g_mib, {p['sizes']['4g']} MiB file"
    for key, samples in tally.mib.items():
        res.add(key, samples, notes.get(key))
        if not key.startswith("mem_calibration") and not key.endswith("_extra_mib"):
            res.value(key.replace("_mib", "_hwm_mib"), max(tally.hwm[key]))
    for what in ("register", "load", "get", "clone_load"):
        a, b = res.get(f"mem_{what}_1g_mib"), res.get(f"mem_{what}_4g_mib")
        if a is not None and b is not None:
            res.value(
                f"mem_{what}_growth_mib",
                round(b - a, 2),
                f"mem_{what}_4g_mib - mem_{what}_1g_mib: growth with a 4x larger file",
            )
    res.value(
        "mem_sampler_max_gap_ms",
        tally.max_gap_ms,
        "longest time between two /proc/PID/status samples over the whole section "
        f"(interval 1 ms, SCHED_FIFO sampler: {tally.realtime})",
    )
    res.value("mem_sizes_mib", p["sizes"])
