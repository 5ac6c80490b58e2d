"""Transfers against DVC (issue 14 item 4), for benchmarks/run.py ``--only transfer``.

The same 1 GiB model (``base``) and its head-only fine-tune (``head``, benchmarks/run.py
``model_files``) go through a **directory remote** and an **S3 remote** (moto's server on
127.0.0.1, started and stopped here), with ``uniflow`` and, with ``--peers``, ``dvc``:

* ``push_full``: the first push of the model (``uniflow push`` / ``dvc push``), whole process;
* ``push_v2``: the push after the fine-tune was registered / ``dvc add``-ed, whole process;
* ``pull_full``: in a fresh clone, ``uniflow pull origin NAME`` followed by the first load
  (``ModelRegistry.load_path`` in a new process: the file materialized and verified), against
  ``dvc pull`` (which checks the file out into the work tree);
* ``pull_v2``: the same clone after ``git pull`` of the fine-tune's commit.

Bytes and requests are counted outside both tools, the same way for both:

* directory remote: a push is the files and bytes that appeared under the remote directory;
  a pull is the objects and bytes that appeared in the clone's own store (``.git/uniflow/objects``,
  ``.dvc/cache/files``), i.e. what was read from the remote;
* S3: every HTTP request reaching the moto server is counted by a WSGI middleware (method,
  request body bytes, response body bytes); ``*_requests_per_gib`` is per GiB of the model.

DVC fsyncs nothing it writes; uniflow fsyncs every chunk it stores. For the directory remote
DVC's steps are also reported with the files they wrote fsynced afterwards (``_fsynced``,
timed), the durability uniflow's figures include.

Keys: ``xfer_<remote>_<tool>_<step>[_fsynced|_bytes|_files|_requests|_requests_per_gib|
_methods]`` with remote ``dir``/``s3``, tool ``uniflow``/``dvc``; ratios
``xfer_<remote>_<step>_dvc_vs_uniflow`` and ``xfer_dir_<step>_dvc_fsynced_vs_uniflow``
(> 1: uniflow faster) and ``xfer_<remote>_push_v2_sent_pct`` (bytes sent after the
fine-tune, in % of the model's bytes).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import MODEL_NAME, Results, fsync_path, git_env, git_repo, log, rmtree, run, sync

NAME = MODEL_NAME
GIB = 1 << 30
BUCKET = "bench"
INTERNAL = "HTTP_X_BENCH"  # requests of this module itself (bucket creation): not counted
REMOTES = ("dir", "s3")
STEPS = ("push_full", "push_v2", "pull_full", "pull_v2")
UNIFLOW_KEYS = [f"xfer_{r}_uniflow_{s}" for r in REMOTES for s in STEPS]
DVC_KEYS = [f"xfer_{r}_dvc_{s}" for r in REMOTES for s in STEPS]
#: what --smoke must report (tests/test_benchmarks.py)
SMOKE_KEYS = [
    *UNIFLOW_KEYS,
    "xfer_dir_uniflow_push_v2_bytes",
    "xfer_s3_uniflow_push_v2_bytes",
    "xfer_s3_uniflow_push_full_requests",
    "xfer_s3_uniflow_push_full_requests_per_gib",
    "xfer_s3_uniflow_pull_full_requests",
    "xfer_dir_push_v2_sent_pct",
    "xfer_s3_push_v2_sent_pct",
]


# --------------------------------------------------------------------------- S3 (moto)


class CountingS3:
    """moto's S3 server on 127.0.0.1 (in a thread of this process) behind a WSGI middleware
    counting every request: method, request body bytes, response body bytes."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

        class Quiet(MotoRequestHandler):  # type: ignore[misc]
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        inner = DomainDispatcherApplication(create_backend_app)
        self.server = make_server("127.0.0.1", 0, self._app(inner), threaded=True, request_handler=Quiet)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while True:  # bounded wait for the first answer
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        self.reset()

    def _app(self, inner: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
            internal = environ.get("PATH_INFO", "").startswith("/moto-api") or INTERNAL in environ
            length = int(environ.get("CONTENT_LENGTH") or 0)
            out = 0
            try:
                for piece in inner(environ, start_response):
                    out += len(piece)
                    yield piece
            finally:
                if not internal:
                    method = environ.get("REQUEST_METHOD", "?")
                    with self.lock:
                        c = self.counts
                        c["requests"] = c.get("requests", 0) + 1
                        c[method] = c.get(method, 0) + 1
                        c["bytes_in"] = c.get("bytes_in", 0) + length
                        c["bytes_out"] = c.get("bytes_out", 0) + out

        return app

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def reset(self) -> None:
        """Forget every bucket (frees moto's memory), then create the empty bucket again."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=60).read()
        req = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT", headers={"X-Bench": "1"})
        urllib.request.urlopen(req, timeout=60).read()
        with self.lock:
            self.counts = {}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=30)


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


# --------------------------------------------------------------------------- directories


def _listing(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    if root.is_dir():
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                out[p] = os.path.getsize(p)
    return out


def _fsync_new(after: dict[str, int], before: dict[str, int]) -> None:
    """fsync every new file and the directories holding them (what uniflow does itself)."""
    dirs = set()
    for p in after:
        if p not in before:
            fsync_path(p)
            dirs.add(os.path.dirname(p))
    for d in dirs:
        fsync_path(d)


def _new(after: dict[str, int], before: dict[str, int]) -> tuple[int, int]:
    new = [p for p in after if p not in before]
    return len(new), sum(after[p] for p in new)


# --------------------------------------------------------------------------- tools


class Step:
    """One measured transfer: wall seconds plus what crossed the wire."""

    def __init__(
        self,
        seconds: float,
        files: int,
        nbytes: int,
        requests: int | None,
        methods: dict[str, int] | None = None,
    ) -> None:
        self.seconds, self.files, self.bytes, self.requests = seconds, files, nbytes, requests
        self.methods = methods or {}
        #: directory remotes, tools that do not fsync: the time plus fsyncing what they wrote
        self.fsynced: float | None = None


def _timed(cmds: list[tuple[list[str], Path]], env: dict[str, str]) -> float:
    sync()
    t0 = time.perf_counter()
    for cmd, cwd in cmds:
        run(cmd, cwd=cwd, env=env, timeout=3600)
    return time.perf_counter() - t0


class Scenario:
    """One tool against one remote: push v1, clone + pull v1, push v2, pull v2."""

    tool = ""
    #: whether the tool fsyncs what it writes (else the benchmark also times doing it for it)
    fsyncs = True

    def __init__(self, work: Path, kind: str, s3: CountingS3 | None) -> None:
        self.work, self.kind, self.s3 = work, kind, s3
        self.bare = work / "srv.git"
        self.blobs = work / "blobs"
        self.env = {**git_env(), "UNIFLOW_CACHE_DIR": str(work / "user-cache")}
        if s3 is not None:
            self.env.update(s3.env())
        rmtree(work)
        work.mkdir(parents=True)
        run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], env=self.env)

    # what the subclasses define
    def remote_url(self) -> str:
        raise NotImplementedError

    def publish(self, f: Path, version: str) -> None:
        raise NotImplementedError

    def push_cmds(self) -> list[tuple[list[str], Path]]:
        raise NotImplementedError

    def pull_cmds(self, version: str) -> list[tuple[list[str], Path]]:
        raise NotImplementedError

    def local_store(self) -> Path:
        raise NotImplementedError

    def check(self, version: str, f: Path) -> None:
        raise NotImplementedError

    # the measured steps
    def measure(self, cmds: list[tuple[list[str], Path]], watch: Path) -> Step:
        before = _listing(watch) if self.s3 is None else {}
        counts = self.s3.snapshot() if self.s3 is not None else {}
        seconds = _timed(cmds, self.env)
        if self.s3 is not None:
            d = _delta(self.s3.snapshot(), counts)
            up = "bytes_in" if "push" in cmds[0][0] else "bytes_out"
            methods = {k: v for k, v in d.items() if k.isupper() and v}
            objects = d.get("PUT", 0) + d.get("GET", 0)
            return Step(seconds, objects, d.get(up, 0), d.get("requests", 0), methods)
        after = _listing(watch)
        files, nbytes = _new(after, before)
        step = Step(seconds, files, nbytes, None)
        if not self.fsyncs:  # what it wrote, made as durable as uniflow's writes: timed too
            t0 = time.perf_counter()
            _fsync_new(after, before)
            step.fsynced = seconds + time.perf_counter() - t0
        return step

    def run(self, base: Path, head: Path) -> dict[str, Step]:
        out: dict[str, Step] = {}
        self.publish(base, "v1.0.0")
        out["push_full"] = self.measure(self.push_cmds(), self.blobs)
        self.clone = self.work / "clone"
        run(["git", "clone", "-q", str(self.bare), str(self.clone)], env=self.env)
        out["pull_full"] = self.measure(self.pull_cmds("v1.0.0"), self.local_store())
        self.check("v1.0.0", base)
        self.publish(head, "v2.0.0")
        out["push_v2"] = self.measure(self.push_cmds(), self.blobs)
        run(["git", "pull", "-q", "--ff-only"], cwd=self.clone, env=self.env)
        out["pull_v2"] = self.measure(self.pull_cmds("v2.0.0"), self.local_store())
        self.check("v2.0.0", head)
        return out


LOAD = (
    "import sys; from uniflow import ModelRegistry; "
    "r = ModelRegistry(sys.argv[1]); p = r.load_path(sys.argv[2], version=sys.argv[3]); "
    "print(sum(x.stat().st_size for x in p.iterdir()))"
)


class Uniflow(Scenario):
    tool = "uniflow"

    def __init__(self, work: Path, kind: str, s3: CountingS3 | None, cmd: list[str], py: str) -> None:
        super().__init__(work, kind, s3)
        self.cmd, self.py = cmd, py
        self.pub = git_repo(work / "pub")
        (self.pub / ".uniflow").mkdir()
        extra = f'endpoint_url = "{s3.endpoint}"\n' if s3 is not None else ""
        (self.pub / ".uniflow" / "config.toml").write_text(
            f'[remotes.origin]\nurl = "{self.remote_url()}"\n{extra}'
        )
        run(["git", "add", ".uniflow/config.toml"], cwd=self.pub, env=self.env)
        run(["git", "commit", "-q", "-m", "blob remote"], cwd=self.pub, env=self.env)
        run(["git", "remote", "add", "origin", str(self.bare)], cwd=self.pub, env=self.env)
        run(["git", "push", "-q", "origin", "main"], cwd=self.pub, env=self.env)

    def remote_url(self) -> str:
        return f"s3://{BUCKET}/uniflow" if self.s3 is not None else str(self.blobs)

    def publish(self, f: Path, version: str) -> None:
        run(
            [*self.cmd, "models", "register", str(f), "--name", NAME, "--version", version],
            cwd=self.pub,
            env=self.env,
            timeout=3600,
        )

    def push_cmds(self) -> list[tuple[list[str], Path]]:
        return [([*self.cmd, "push"], self.pub)]

    def pull_cmds(self, version: str) -> list[tuple[list[str], Path]]:
        return [
            ([*self.cmd, "pull", "origin", NAME], self.clone),
            ([self.py, "-c", LOAD, str(self.clone), NAME, version], self.clone),
        ]

    def local_store(self) -> Path:
        return self.clone / ".git" / "uniflow" / "objects"

    def check(self, version: str, f: Path) -> None:
        out = run([self.py, "-c", LOAD, str(self.clone), NAME, version], env=self.env).stdout.split()
        if int(out[-1]) != f.stat().st_size:
            raise RuntimeError(f"uniflow loaded {out[-1]} bytes, expected {f.stat().st_size}")


class Dvc(Scenario):
    tool = "dvc"
    fsyncs = False

    def __init__(self, work: Path, kind: str, s3: CountingS3 | None, bin_dir: Path) -> None:
        super().__init__(work, kind, s3)
        home = work / "home"
        home.mkdir()
        from benchmarks.peers import peer_env

        self.env = {
            **peer_env(),
            **{k: v for k, v in self.env.items() if k.startswith("AWS_")},
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "DVC_SITE_CACHE_DIR": str(home / "site"),
        }
        (home / ".gitconfig").write_text("[user]\n\tname = bench\n\temail = bench@example.com\n")
        self.dvc = str(bin_dir / "dvc")
        self.pub = git_repo(work / "pub")
        run([self.dvc, "init", "-q"], cwd=self.pub, env=self.env)
        run([self.dvc, "config", "core.analytics", "false"], cwd=self.pub, env=self.env)
        run([self.dvc, "remote", "add", "-d", "store", self.remote_url()], cwd=self.pub, env=self.env)
        if s3 is not None:
            run(
                [self.dvc, "remote", "modify", "store", "endpointurl", s3.endpoint],
                cwd=self.pub,
                env=self.env,
            )
        run(["git", "add", "-A"], cwd=self.pub, env=self.env)
        run(["git", "commit", "-q", "-m", "dvc remote"], cwd=self.pub, env=self.env)
        run(["git", "remote", "add", "origin", str(self.bare)], cwd=self.pub, env=self.env)
        run(["git", "push", "-q", "origin", "main"], cwd=self.pub, env=self.env)

    def remote_url(self) -> str:
        return f"s3://{BUCKET}/dvc" if self.s3 is not None else str(self.blobs)

    def publish(self, f: Path, version: str) -> None:
        target = self.pub / "model.safetensors"
        target.unlink(missing_ok=True)
        run(["cp", str(f), str(target)])
        run([self.dvc, "add", "-q", "model.safetensors"], cwd=self.pub, env=self.env, timeout=3600)
        run(["git", "add", "-A"], cwd=self.pub, env=self.env)
        run(["git", "commit", "-q", "-m", version], cwd=self.pub, env=self.env)
        run(["git", "push", "-q", "origin", "main"], cwd=self.pub, env=self.env)

    def push_cmds(self) -> list[tuple[list[str], Path]]:
        return [([self.dvc, "push", "-q"], self.pub)]

    def pull_cmds(self, version: str) -> list[tuple[list[str], Path]]:
        return [([self.dvc, "pull", "-q"], self.clone)]

    def local_store(self) -> Path:
        return self.clone / ".dvc" / "cache" / "files"

    def check(self, version: str, f: Path) -> None:
        size = (self.clone / "model.safetensors").stat().st_size
        if size != f.stat().st_size:
            raise RuntimeError(f"dvc pull wrote {size} bytes, expected {f.stat().st_size}")


# --------------------------------------------------------------------------- driver


def _record(res: Results, kind: str, tool: str, runs: list[dict[str, Step]], model_bytes: int) -> None:
    where = "a directory remote" if kind == "dir" else "moto's S3 server on 127.0.0.1"
    what = {
        "push_full": f"`{tool} push` of the 1 GiB model to {where}, whole process",
        "push_v2": f"`{tool} push` after a head-only fine-tune, whole process",
        "pull_full": (
            "`uniflow pull origin NAME` + first load (load_path in a new process) in a fresh clone"
            if tool == "uniflow"
            else "`dvc pull` in a fresh clone (file checked out)"
        )
        + f", {where}",
        "pull_v2": "the same after `git pull` of the fine-tune",
    }
    for step in STEPS:
        key = f"xfer_{kind}_{tool}_{step}"
        res.add(key, [r[step].seconds for r in runs], what[step])
        last = runs[-1][step]
        res.value(
            f"{key}_bytes", last.bytes, "bytes sent (push) or received (pull), counted outside the tool"
        )
        res.value(f"{key}_files", last.files, "files written (push) / read (pull); S3: PUT + GET requests")
        fsynced = [r[step].fsynced for r in runs]
        if all(x is not None for x in fsynced):
            res.add(
                f"{key}_fsynced",
                [x for x in fsynced if x is not None],
                "the same plus fsyncing the files it wrote (remote for push, cache for pull) and "
                "their directories, as uniflow does",
            )
        if last.requests is not None:
            res.value(f"{key}_requests", last.requests, "HTTP requests reaching the S3 server")
            if step.endswith("_full"):
                res.value(f"{key}_requests_per_gib", round(last.requests * GIB / model_bytes, 1))
            res.value(f"{key}_methods", last.methods, "the requests by HTTP method")
    sent = runs[-1]["push_v2"].bytes
    res.value(f"xfer_{kind}_{tool}_push_v2_sent_pct", round(100.0 * sent / model_bytes, 3))


def compute(res: Results) -> None:
    for kind in REMOTES:
        for step in STEPS:
            a, b = res.get(f"xfer_{kind}_dvc_{step}"), res.get(f"xfer_{kind}_uniflow_{step}")
            res.values[f"xfer_{kind}_{step}_dvc_vs_uniflow"] = round(a / b, 4) if a and b else None
            if kind == "dir":
                a = res.get(f"xfer_{kind}_dvc_{step}_fsynced")
                res.values[f"xfer_{kind}_{step}_dvc_fsynced_vs_uniflow"] = (
                    round(a / b, 4) if a and b else None
                )
        res.values[f"xfer_{kind}_push_v2_sent_pct"] = res.values.get(f"xfer_{kind}_uniflow_push_v2_sent_pct")


def bench_transfers(
    res: Results,
    files: dict[str, Path],
    work: Path,
    cmd: list[str],
    py: str,
    runs: int,
    dvc_bin: Path | None,
    kinds: tuple[str, ...] = REMOTES,
) -> None:
    base, head = files["base"], files["head"]
    model_bytes = base.stat().st_size
    s3 = CountingS3()
    try:
        for kind in kinds:
            server = s3 if kind == "s3" else None
            tools: list[tuple[str, Callable[[Path], Scenario]]] = [
                ("uniflow", lambda w, k=kind, sv=server: Uniflow(w, k, sv, cmd, py))
            ]
            if dvc_bin is not None:
                tools.append(("dvc", lambda w, k=kind, sv=server, b=dvc_bin: Dvc(w, k, sv, b)))
            done: dict[str, list[dict[str, Step]]] = {t: [] for t, _ in tools}
            for i in range(runs):
                for tool, make in tools:  # interleaved: both tools see the same machine load
                    if tool == "dvc" and tool not in done:
                        continue  # a DVC failure: reported, the uniflow runs go on
                    s3.reset()
                    d = work / f"xfer-{kind}-{tool}"
                    try:
                        steps = make(d).run(base, head)
                    except Exception as exc:
                        if tool != "dvc":
                            raise
                        done.pop(tool)
                        res.fail(
                            [k for k in DVC_KEYS if f"_{kind}_" in k],
                            f"dvc on the {kind} remote failed: {type(exc).__name__}: {str(exc)[:400]}",
                        )
                        continue
                    finally:
                        rmtree(d)
                    done[tool].append(steps)
                    log(
                        f"    {kind} {tool} {i + 1}/{runs}: "
                        + ", ".join(
                            f"{s} {v.seconds:.2f} s {v.bytes / (1 << 20):.1f} MiB"
                            + (f" {v.requests} req" if v.requests is not None else f" {v.files} files")
                            for s, v in steps.items()
                        )
                    )
            for tool, samples in done.items():
                _record(res, kind, tool, samples, model_bytes)
        s3.reset()
    finally:
        s3.stop()


GOALS: list[tuple[str, str, str, float, str]] = [
    ("push vs dvc (dir)", "xfer_dir_push_full_dvc_vs_uniflow", ">=", 1.0, "`uniflow push` 1 GiB >= dvc push"),
    ("pull vs dvc (dir)", "xfer_dir_pull_full_dvc_vs_uniflow", ">=", 1.0, "pull + first load >= dvc pull"),
    ("push vs dvc (S3)", "xfer_s3_push_full_dvc_vs_uniflow", ">=", 1.0, "`uniflow push` 1 GiB to S3 >= dvc"),
    ("pull vs dvc (S3)", "xfer_s3_pull_full_dvc_vs_uniflow", ">=", 1.0, "pull + load from S3 >= dvc pull"),
    ("fine-tune sent (dir)", "xfer_dir_push_v2_sent_pct", "<=", 2.0, "push after head fine-tune <= 2% bytes"),
    ("fine-tune sent (S3)", "xfer_s3_push_v2_sent_pct", "<=", 2.0, "same to S3 <= 2% of the model's bytes"),
]

TABLE_KEYS = [
    f"xfer_{r}_{t}_{s}{suffix}"
    for r in REMOTES
    for t in ("uniflow", "dvc")
    for s in STEPS
    for suffix in ("", "_fsynced", "_bytes", "_requests")
]
RATIO_KEYS = [
    *(f"xfer_{r}_{s}_dvc_vs_uniflow" for r in REMOTES for s in STEPS),
    *(f"xfer_dir_{s}_dvc_fsynced_vs_uniflow" for s in STEPS),
    *(f"xfer_{r}_push_v2_sent_pct" for r in REMOTES),
]


def main(
    res: Results,
    files: dict[str, Path],
    work: Path,
    cache: Path,
    mode: dict[str, Any],
    peers: bool,
    cmd: list[str] | None,
) -> None:
    """The hook of benchmarks/run.py: uniflow always, DVC (with dvc-s3) with ``--peers``."""
    import sys

    if cmd is None:
        raise RuntimeError("no working uniflow CLI")
    dvc_bin = None
    if peers:
        from benchmarks.peers import ensure_extra, version_of

        try:
            dvc_bin = ensure_extra(cache, "dvc", "dvc-s3", "dvc_s3")
        except Exception as exc:  # a peer that cannot be installed is reported, not fatal
            res.fail(DVC_KEYS, f"dvc unavailable: {type(exc).__name__}: {str(exc)[:400]}")
        else:
            res.value("xfer_dvc_version", version_of(dvc_bin, "dvc"))
            res.value("xfer_dvc_s3_version", version_of(dvc_bin, "dvc-s3"))
    bench_transfers(res, files, work, cmd, sys.executable, mode.get("transfer_runs", 1), dvc_bin)
