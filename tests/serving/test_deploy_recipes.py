"""docs/deploy.md's recipes for LLM servers and container images, run as the doc writes them.

- "LLM servers": a ``save_pretrained`` directory (a tiny Llama and a tokenizer, both built
  offline) registered, promoted and pushed with the doc's commands, read back by ``uniflow
  get`` over ``git daemon``, and loaded with transformers: the same logits as the original.
  vLLM and TGI cannot run here; they read this same directory.
- "Container images": docs/deploy/Dockerfile.model-image parsed (secret mounts, a final stage
  that copies the model directory only, no secret in an ARG or ENV), and its RUN step run by
  ``/bin/sh`` as BuildKit runs it (build arguments and mounted secrets in the environment)
  against ``git daemon`` and a token-protected HTTP Git server on 127.0.0.1.
- Every ``uniflow`` command in docs/deploy*.md (``console`` and ``sh`` blocks, CI steps in
  YAML blocks, command substitutions) parses with the CLI: the sub-command exists, its
  options are known, its arguments fit; placeholders and synopses are allowed where they
  cannot be checked.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from tests.gitserver import serve_git_http
from tests.helpers import cli, git, publish_registry, shared_setup, tree_bytes
from uniflow.cli._main import cli as uniflow_cli
from uniflow.serving.kserve import parse_uniflow_uri

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("deploy*.md"))
DOC = (ROOT / "docs" / "deploy.md").read_text()
DOCKERFILE = ROOT / "docs" / "deploy" / "Dockerfile.model-image"
ASKPASS = ROOT / "docs" / "deploy" / "uniflow-git-askpass"


def _blocks(text: str, langs: set[str]) -> list[str]:
    """The fenced blocks of ``text`` whose info string is one of ``langs``."""
    out: list[str] = []
    opened: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if opened is None and line.startswith("```"):
            opened, lines = line[3:].strip(), []
        elif opened is not None and line == "```":
            if opened in langs:
                out.append("\n".join(lines) + "\n")
            opened = None
        elif opened is not None:
            lines.append(line)
    return out


# ================================================================== LLM servers (vLLM, TGI)
LLM_NAME = "tiny-llm"
#: the doc's commands, in order; the test replaces the GitHub URL and the output directory
#: with its ``git daemon`` URL and a temporary directory
LLM_REGISTER = [
    f"uniflow models register out/{LLM_NAME} --name {LLM_NAME} --version v1.0.0 --framework transformers",
    f"uniflow models promote {LLM_NAME} v1.0.0 --to production",
    "uniflow push",
]
LLM_GET = f"uniflow get https://github.com/team/llm.git {LLM_NAME} --stage production -o /models/{LLM_NAME}"
LLM_TEXT = "the model is served by a registry"


def _tiny_llm(path: Path, seed: int) -> Any:
    """A two-layer Llama with a word-level tokenizer, saved with ``save_pretrained`` into
    ``path`` (nothing downloaded); returns the model."""
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2}
    for word in LLM_TEXT.split():
        vocab.setdefault(word, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    config = tf.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return model


def _logits(model: Any, directory: Path) -> Any:
    """The logits of ``model`` on LLM_TEXT as tokenized by the tokenizer in ``directory``."""
    import torch
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(directory)(LLM_TEXT, return_tensors="pt").input_ids
    assert ids.shape == (1, len(LLM_TEXT.split()))  # every word is in the vocabulary
    with torch.no_grad():
        return model(ids).logits


def _run_doc_command(cwd: Path, command: str, replace: dict[str, str] | None = None, code: int = 0) -> Any:
    """Run a command of the doc (``uniflow ...``) with the CLI, each key of ``replace``
    replaced by its value first."""
    for old, new in (replace or {}).items():
        command = command.replace(old, new)
    args = shlex.split(command)
    assert args[0] == "uniflow"
    return cli(cwd, *args[1:], code=code)


@pytest.mark.slow  # git daemon on loopback, transformers
def test_a_save_pretrained_directory_got_by_url_loads_with_the_same_logits(
    tmp_path: Path, git_daemon: str, empty_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # every load below reads a local directory
    for command in (*LLM_REGISTER, LLM_GET):
        assert command in DOC, command
    bare, clone = shared_setup(tmp_path)
    git(bare, "config", "uploadpack.allowFilter", "true")  # as publish_registry's server
    original = _tiny_llm(clone / "out" / LLM_NAME, seed=0)
    for command in LLM_REGISTER:
        _run_doc_command(clone, command)

    models = empty_dir / "models"
    models.mkdir()  # the server's volume
    url = f"{git_daemon}/remote.git"
    # the repository's config names a directory blob remote, which a URL read must be told
    blob = f" --blob {tmp_path / 'blobs'}"
    served = models / LLM_NAME
    get = {"https://github.com/team/llm.git": url, f"/models/{LLM_NAME}": f"{served}{blob}"}
    _run_doc_command(empty_dir, LLM_GET, get)
    registered = tree_bytes(clone / "out" / LLM_NAME)
    assert tree_bytes(served) == registered
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(
        tree_bytes(served)
    )
    _assert_readable_by_all(served)

    from transformers import AutoConfig, AutoModelForCausalLM

    assert AutoConfig.from_pretrained(served).architectures == ["LlamaForCausalLM"]  # what vLLM dispatches on
    loaded = AutoModelForCausalLM.from_pretrained(served).eval()
    assert _logits(loaded, served).equal(_logits(original, clone / "out" / LLM_NAME))

    # a new production version: the served directory is kept (exit 2) unless --force, which
    # replaces it only once the new files are complete
    tuned = _tiny_llm(clone / "out" / LLM_NAME, seed=1)
    _run_doc_command(clone, LLM_REGISTER[0].replace("v1.0.0", "v1.1.0"))
    _run_doc_command(clone, LLM_REGISTER[1].replace("v1.0.0", "v1.1.0"))
    _run_doc_command(clone, "uniflow push")
    r = _run_doc_command(empty_dir, LLM_GET, get, code=2)
    assert "already exists" in r.stderr and r.stderr.count("\n") == 1
    assert tree_bytes(served) == registered  # the server's files untouched
    assert "--force" in DOC
    _run_doc_command(empty_dir, LLM_GET + " --force", get)
    reloaded = AutoModelForCausalLM.from_pretrained(served).eval()
    assert _logits(reloaded, served).equal(_logits(tuned, clone / "out" / LLM_NAME))
    assert not _logits(reloaded, served).equal(_logits(original, served))
    assert sorted(p.name for p in models.iterdir()) == [LLM_NAME]  # nothing left beside it


def _assert_readable_by_all(directory: Path) -> None:
    """Every file and directory can be read by any user (a server running as another uid)."""
    for p in [directory, *directory.rglob("*")]:
        mode = p.stat().st_mode
        assert mode & stat.S_IROTH, (p, oct(mode))
        if p.is_dir():
            assert mode & stat.S_IXOTH, (p, oct(mode))


# ================================================================== container images
@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and its arguments, continuation
    lines joined as the Dockerfile frontend joins them."""

    keyword: str
    args: str


def _instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue  # comments (also between continuation lines) and blank lines
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "a continuation line ends the file"
    return out


@dataclass(frozen=True)
class Stage:
    """A build stage: the ``FROM`` arguments and the instructions after it."""

    source: str
    name: str | None
    body: list[Instruction]


def _stages(instructions: list[Instruction]) -> tuple[list[Instruction], list[Stage]]:
    """The instructions before the first FROM (global ARGs), and the stages."""
    head: list[Instruction] = []
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        elif stages:
            stages[-1].body.append(ins)
        else:
            head.append(ins)
    return head, stages


def _run_parts(ins: Instruction) -> tuple[list[dict[str, str]], str]:
    """The ``--mount`` options of a RUN instruction (each as a dict) and its shell command."""
    match = re.fullmatch(r"((?:--\S+\s+)*)(.+)", ins.args, re.DOTALL)
    assert match is not None, ins
    mounts = []
    for flag in match.group(1).split():
        assert flag.startswith("--mount="), flag  # no --network, --security flags
        mounts.append(dict(kv.split("=", 1) for kv in flag.removeprefix("--mount=").split(",")))
    return mounts, match.group(2)


def _arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """The ARGs declared and their defaults (quotes removed as the frontend removes them)."""
    out: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            out[name] = shlex.split(default)[0] if default.strip("\"'") else ""
    return out


DOCKER = _instructions(DOCKERFILE.read_text())
GLOBAL, STAGES = _stages(DOCKER)
SECRETISH = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY\b|ACCESS_KEY", re.IGNORECASE)


def _fetch_run() -> tuple[list[dict[str, str]], str]:
    (fetch,) = [s for s in STAGES if s.name == "fetch"]
    (run,) = [i for i in fetch.body if i.keyword == "RUN"]
    return _run_parts(run)


def _out_dir(command: str) -> str:
    args = shlex.split(command)
    return args[args.index("-o") + 1]


def test_the_model_image_gets_the_model_with_secrets_and_ships_only_its_files() -> None:
    assert DOCKERFILE.read_text().startswith("# syntax=docker/dockerfile:1\n")  # secret env= mounts
    assert [s.name for s in STAGES] == ["fetch", None]
    # the first stage is the storage initializer's image, as the KServe section builds it
    defaults = _arg_defaults(GLOBAL)
    assert STAGES[0].source == "${UNIFLOW_IMAGE}"
    assert f"-t {defaults['UNIFLOW_IMAGE']} ." in DOC
    mounts, command = _fetch_run()
    secrets = {m["id"]: m for m in mounts}
    assert all(m["type"] == "secret" for m in mounts)
    assert secrets["git_token"]["env"] == "UNIFLOW_GIT_TOKEN"  # what the image's GIT_ASKPASS reads
    assert {"aws_access_key_id", "aws_secret_access_key"} <= set(secrets)
    for m in mounts:
        assert m["env"] not in command  # the command never names a secret, so never prints one
    assert shlex.split(command)[:2] == ["uniflow", "get"]
    # no credentials in a build argument or an environment variable of any stage
    for ins in DOCKER:
        if ins.keyword in ("ARG", "ENV"):
            assert not SECRETISH.search(ins.args), ins
    # the final stage: the base image and the model's files, nothing else
    final = STAGES[-1]
    assert final.source == "${BASE}" and defaults["BASE"].startswith("busybox:")
    assert final.body == [Instruction("COPY", f"--from=fetch {_out_dir(command)} /models")]


def test_the_doc_shows_the_dockerfile_and_builds_it_with_its_args_and_secrets() -> None:
    (shown,) = [b for b in _blocks(DOC, {"dockerfile"}) if "uniflow get" in b]
    assert _instructions(shown) == DOCKER
    builds = [c for c in _shell_lines(DOC) if c.startswith("docker build") and "model-image" in c]
    assert builds
    declared = _arg_defaults(DOCKER)
    mounted = {m["id"] for m in _fetch_run()[0]}
    for build in builds:
        words = shlex.split(build)
        for flag, value in zip(words, words[1:], strict=False):
            if flag == "--build-arg":
                assert value.split("=", 1)[0] in declared, value
            elif flag == "--secret":
                fields = dict(kv.split("=", 1) for kv in value.split(","))
                assert fields["id"] in mounted, value
        assert "MODEL=" in build and "REGISTRY=" in build


def _build(
    tmp_path: Path,
    build_args: dict[str, str],
    secrets: dict[str, str],
    tag: str,
    uniflow: str = f'exec {shlex.quote(sys.executable)} -m uniflow "$@"',
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the fetch stage's RUN command with ``/bin/sh -c``, as BuildKit runs it: the ARGs
    (defaults, then ``build_args``) and the mounted secrets in its environment, git's askpass
    and ``uniflow`` (a script running this checkout, or the shell code ``uniflow``) on the
    path as the storage initializer's image has them. The container path of the output
    directory is replaced by a directory under ``tmp_path``; returns it."""
    mounts, command = _fetch_run()
    out = tmp_path / f"image-{tag}" / "model"
    out.parent.mkdir()
    command = command.replace(_out_dir(command), shlex.quote(str(out)))
    bin_dir = tmp_path / f"bin-{tag}"
    bin_dir.mkdir()
    (bin_dir / "uniflow").write_text(f"#!/bin/sh\n{uniflow}\n")
    (bin_dir / "uniflow").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(ROOT),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ASKPASS": str(ASKPASS),
        "UNIFLOW_CACHE_DIR": str(tmp_path / f"cache-{tag}"),
        **{k: v for k, v in _arg_defaults(DOCKER).items() if k not in _arg_defaults(GLOBAL)},
        **build_args,
    }
    for m in mounts:
        if m["id"] in secrets:
            env[m["env"]] = secrets[m["id"]]
    r = subprocess.run(
        ["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    return r, out


@pytest.mark.parametrize(
    ("build_args", "expected"),
    [
        ({}, ["--stage=production"]),
        ({"STAGE": "staging"}, ["--stage=staging"]),
        ({"VERSION": "v1.3.0"}, ["v1.3.0"]),
        ({"VERSION": "v1.3.0", "BLOB": "s3://team models/u"}, ["v1.3.0", "--blob=s3://team models/u"]),
    ],
)
def test_the_run_step_expands_its_build_args_into_a_get_command(
    tmp_path: Path, build_args: dict[str, str], expected: list[str]
) -> None:
    """The shell gives ``uniflow`` the arguments the doc says, and the CLI accepts them."""
    argv = tmp_path / "argv"
    record = f"printf '%s\\0' \"$@\" > {shlex.quote(str(argv))}"
    args = {"REGISTRY": "https://github.com/team/sentiment.git", "MODEL": "clf", **build_args}
    r, out = _build(tmp_path, args, {}, "argv", uniflow=record)
    assert r.returncode == 0, r.stderr
    words = argv.read_text().split("\0")[:-1]
    assert words == ["get", args["REGISTRY"], "clf", *expected, "-o", str(out)]
    assert _parse(words).name == "get"


@pytest.mark.slow  # git daemon on loopback
def test_the_run_step_gets_the_registered_files_over_git_daemon(tmp_path: Path, git_daemon: str) -> None:
    pub = publish_registry(tmp_path)
    args = {"REGISTRY": f"{git_daemon}/remote.git", "MODEL": "clf", "BLOB": str(pub["blobs"])}
    r, out = _build(tmp_path, args, {}, "stage")  # VERSION empty: the holder of production
    assert r.returncode == 0, r.stderr
    assert "Got clf v1.0.0 (production)" in r.stdout
    assert tree_bytes(out) == tree_bytes(pub["v1"])  # what COPY --from=fetch puts in /models
    _assert_readable_by_all(out)
    r, out = _build(tmp_path, {**args, "VERSION": "v1.1.0"}, {}, "pinned")
    assert r.returncode == 0, r.stderr
    assert tree_bytes(out) == tree_bytes(pub["v2"])
    # a version that does not exist fails the build in one line, and writes nothing
    r, out = _build(tmp_path, {**args, "VERSION": "v9.9.9"}, {}, "missing")
    assert r.returncode == 3 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists() and not list(out.parent.iterdir())


@pytest.mark.slow  # an HTTP Git server on loopback
def test_the_git_token_comes_from_the_build_secret(tmp_path: Path) -> None:
    pub = publish_registry(tmp_path)
    with serve_git_http(pub["bare"].parent, "x-access-token", "tok-SECRET") as (server, _handler):
        args = {"REGISTRY": f"{server}/remote.git", "MODEL": "clf", "BLOB": str(pub["blobs"])}
        ok, out = _build(tmp_path, args, {"git_token": "tok-SECRET"}, "secret")
        wrong, wrong_out = _build(tmp_path, args, {"git_token": "revoked"}, "revoked")
        none, none_out = _build(tmp_path, args, {}, "none")
    assert ok.returncode == 0, ok.stderr
    assert tree_bytes(out) == tree_bytes(pub["v1"])
    assert "tok-SECRET" not in ok.stdout + ok.stderr
    for r, o in ((wrong, wrong_out), (none, none_out)):
        assert r.returncode == 9 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "revoked" not in r.stderr and not o.exists()


# ================================================================== every command parses
def _shell_lines(text: str) -> list[str]:
    """The shell commands of a page: the lines after ``$ `` of its ``console`` blocks, every
    line of its ``sh``/``bash``/``shell`` blocks, and the ``run:`` / ``script:`` steps of its
    YAML blocks (CI workflows); continuation lines joined, comment lines dropped."""
    scripts = [
        (kind, block) for kind in ("console", "sh", "bash", "shell") for block in _blocks(text, {kind})
    ]
    scripts += [
        ("sh", step) for block in _blocks(text, {"yaml", "yml"}) for step in _ci_steps(yaml_load(block))
    ]
    out: list[str] = []
    for kind, script in scripts:
        pending: str | None = None
        for line in script.splitlines():
            if pending is None:
                if kind == "console" and not line.startswith("$ "):
                    continue  # the output of a command
                line = line.removeprefix("$ ")
                pending = ""
            pending += line.removesuffix("\\") + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                out.append(pending.strip())
                pending = None
    return [line for line in out if line and not line.startswith("#")]


def yaml_load(text: str) -> Any:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(text)


def _ci_steps(node: Any) -> Iterator[str]:
    """The shell scripts of a CI document: GitHub Actions ``run:`` values, GitLab CI
    ``script:`` / ``before_script:`` / ``after_script:`` lines, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                yield value
            elif key in ("script", "before_script", "after_script"):
                yield from [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
            else:
                yield from _ci_steps(value)
    elif isinstance(node, list):
        for item in node:
            yield from _ci_steps(item)


PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*|<[^<>]+>|\$\{?\w+\}?")


def _substitutions(line: str) -> tuple[str, list[str]]:
    """``line`` with each command substitution ``$(...)`` replaced by the placeholder
    ``SUBST``, and the commands inside them; ``${{ ... }}`` (a CI expression) becomes
    ``EXPR``."""
    line = re.sub(r"\$\{\{.*?\}\}", "EXPR", line)
    inner: list[str] = []
    while (at := line.find("$(")) >= 0:
        depth, end = 0, at + 1
        for end in range(at + 1, len(line)):  # noqa: B007 (end is used after the loop)
            depth += {"(": 1, ")": -1}.get(line[end], 0)
            if depth == 0:
                break
        inner.append(line[at + 2 : end])
        line = line[:at] + "SUBST" + line[end + 1 :]
    return line, inner


def _invocations(line: str) -> Iterator[list[str]]:
    """The argument lists of each ``uniflow`` command on a shell line (``a && b``, pipes,
    ``VAR=value`` prefixes, command substitutions)."""
    line, inner = _substitutions(line)
    for command in inner:
        yield from _invocations(command)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    for word in [*lexer, ";"]:
        if word and set(word) <= set(";&|"):
            while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                words.pop(0)
            if words and words[0] == "uniflow":
                yield words[1:]
            words = []
        else:
            words.append(word)


def _given_a_placeholder(param: click.Parameter | None, args: list[str]) -> bool:
    """Whether ``args`` give the option ``param`` a placeholder (``S``, ``<n>``, ``$VAR``)
    rather than a value of its type (a number); never for a choice."""
    if param is None or isinstance(param.type, click.Choice):
        return False  # a choice is shown with one of its values
    for flag, value in zip(args, args[1:], strict=False):
        if flag in param.opts and PLACEHOLDER.fullmatch(value):
            return True
    return any(
        a.startswith(f"{opt}=") and PLACEHOLDER.fullmatch(a.split("=", 1)[1])
        for a in args
        for opt in param.opts
    )


def _parents(ctx: click.Context) -> Iterator[click.Context]:
    while ctx.parent is not None:
        ctx = ctx.parent
        yield ctx


def _parse(args: list[str], *, synopsis: bool = False) -> click.Command:
    """Parse ``uniflow ARGS`` as the CLI would, down to the sub-command, without running it;
    returns the sub-command. A synopsis (``[--opt X]``), a request for help, or a command
    giving a typed option a placeholder only has its sub-command and options looked up."""
    synopsis = synopsis or any(a.startswith("[") or a in ("-h", "--help", "--version") for a in args)
    words = [a for a in args if not a.startswith("[")] if synopsis else args
    command: click.Command = uniflow_cli
    try:
        ctx = command.make_context("uniflow", list(words), resilient_parsing=synopsis)
        while isinstance(command, click.Group):
            protected = getattr(ctx, "_protected_args", None)
            if protected is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    protected = ctx.protected_args
            name, sub, rest = command.resolve_command(ctx, [*protected, *ctx.args])
            assert sub is not None and name is not None
            command, ctx = sub, sub.make_context(name, rest, parent=ctx, resilient_parsing=synopsis)
    except click.BadParameter as exc:
        if synopsis or not _given_a_placeholder(exc.param, args):
            raise
        return _parse(args, synopsis=True)
    if synopsis:
        path = [c.command for c in (ctx, *_parents(ctx))]
        known = {opt for c in path for p in c.params for opt in (*p.opts, *p.secondary_opts)}
        known |= set(ctx.help_option_names)
        for word in args:
            for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", word):
                assert option in known, (args, option)
    return command


def test_every_uniflow_command_in_the_deploy_docs_parses() -> None:
    seen: set[str] = set()
    for doc in DOCS:
        for line in _shell_lines(doc.read_text()):
            for args in _invocations(line):
                try:
                    command = _parse(args)
                except click.ClickException as exc:
                    pytest.fail(f"{doc.name}: `uniflow {shlex.join(args)}`: {exc.format_message()}")
                for arg in args:
                    if arg.lower().startswith("uniflow://"):
                        parse_uniflow_uri(arg)
                seen.add(command.name or "")
    assert {"get", "storage-initializer", "register", "promote", "push"} <= seen


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("uniflow fetch URL clf", "No such command 'fetch'"),
        ("uniflow get URL clf --stag production", "No such option '--stag'"),
        ("uniflow get URL clf --layout flat", "'flat' is not one of"),
        ("uniflow get URL", "Missing argument 'NAME'"),
        ("uniflow models register out/m --name m --metrics a=1", "No such option '--metrics'"),
        ("FOO=1 uniflow models promte clf v1 --to production", "No such command 'promte'"),
        ("true && uniflow get [--stage STAGE] [--output DIR]", "--output"),
        ('V="$(uniflow models show clf --stage production --jsn)"', "No such option '--jsn'"),
        ("uniflow get URL NAME --layout <layout>", "'<layout>' is not one of"),
    ],
)
def test_the_parse_check_catches_what_does_not_exist(line: str, why: str) -> None:
    """A command, option or value that does not exist fails the check, also inside a
    command substitution; a placeholder is no excuse for a choice that does not exist."""
    (args,) = list(_invocations(line))
    with pytest.raises((click.ClickException, AssertionError)) as caught:
        _parse(args)
    message = (
        caught.value.format_message() if isinstance(caught.value, click.ClickException) else str(caught.value)
    )
    assert why in message


@pytest.mark.parametrize(
    "line",
    [
        "uniflow ui --port PORT",
        'uniflow push --jobs "$JOBS"',
        "uniflow pull -j <n>",
        'echo "$(uniflow get URL NAME --stage STAGE --json)" | jq .version',
        "uniflow get URL NAME [VERSION] [--stage STAGE] [-o DIR] [--force] [--json]",
        "uniflow storage-initializer 'uniflow://git://h.example/r.git#clf@production' /mnt/models",
        "uniflow get --help",
        "uniflow --repo URL [--traceback] models list [--json]",
    ],
)
def test_placeholders_and_synopses_parse(line: str) -> None:
    (args,) = list(_invocations(line))
    assert _parse(args).name in ("ui", "push", "pull", "get", "storage-initializer", "list")
