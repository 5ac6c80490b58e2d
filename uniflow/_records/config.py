"""``.uniflow/config.toml`` as one typed object: stages, blob remotes, promotion rules, limits.

:func:`load_config` reads and validates the whole file once and returns a frozen
:class:`Config`; any problem is one :class:`ConfigError` naming the file and the key.
Writers (``uniflow remote add``) edit the raw table (``Config.raw``) and :func:`save_config` it.

Example::

    [stages.canary]
    single = true            # holds one version at a time (default true)

    [remotes.origin]
    url = "s3://bucket/prefix"
    connect_timeout = 10     # seconds; optional (defaults shown)
    read_timeout = 60

    [[promote]]
    model = "sentiment_classifier"
    from = "staging"
    to = "production"
    when = ["accuracy >= 0.9"]

    [events]
    tags = true              # an annotated tag uniflow/<model>/<stage>/<seq> per stage move (default false)

    [limits]                 # what a version read from Git may claim (defaults shown)
    max_version_bytes = 1099511627776   # 1 TiB: total size of a version's files
    max_chunks = 1048576                # chunks (and, separately, files) in one version
    max_manifest_bytes = 134217728      # 128 MiB: the manifest blob, checked before decoding
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import MutableMapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .._errors import ConfigError, UsageError
from .._naming import validate_model_name
from .._stages import (
    BUILTIN_STAGES,
    SINGLE_HOLDER_DEFAULT,
    normalize_stage,
    valid_custom_stage_name,
)

__all__ = [
    "env_seconds",
    "CONFIG_HEADER",
    "GITIGNORE",
    "Condition",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "Config",
    "ConfigSource",
    "Limits",
    "SIGNATURE_MODES",
    "PromoteRule",
    "RemoteSpec",
    "init_layout",
    "load_config",
    "parse_condition",
    "save_config",
]

#: the store lives in .git/uniflow; objects/ tmp/ cache/ stay ignored for stores of the old
#: layout (moved on first use) and for older uniflow versions run in the same clone
GITIGNORE = (
    "# uniflow: pipeline run records (local); objects/ tmp/ cache/: where the store was up to 0.2.0\n"
    "objects/\ntmp/\ncache/\nruns/\n"
)
CONFIG_HEADER = (
    "# uniflow configuration (commit this file).\n"
    "# [stages.NAME] single = true   declares a custom stage\n"
    '# [remotes.NAME] url = "..."    declares a blob remote\n'
    "# [[promote]] model/from/to/when declares a promote-on-merge rule\n"
)
_FILE = ".uniflow/config.toml"
_COND_RE = re.compile(
    r"\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.:/-]{0,127})\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*"
)
_OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def _error(key: str, problem: str) -> ConfigError:
    return ConfigError(f"{_FILE}: {key}: {problem}")


# ---------------------------------------------------------------------- the parts
@dataclass(frozen=True)
class Limits:
    """Bounds on what a manifest read from Git may claim (``[limits]`` in config.toml).

    A manifest beyond them is an :class:`IntegrityError`, so a hostile version can never make
    a reader allocate or transfer more than this. The defaults fit a 1 TiB version cut at
    the chunker's 1 MiB average (about 2^20 chunks); raise them for larger models.
    """

    max_version_bytes: int = 1 << 40
    max_chunks: int = 1 << 20
    max_manifest_bytes: int = 128 << 20

    def tightened_by(self, other: Limits) -> Limits:
        """These limits, each lowered to ``other``'s where that is lower (never raised): a
        registry read by URL applies the built-in defaults, tightened by its own [limits]."""
        return Limits(**{f.name: min(getattr(self, f.name), getattr(other, f.name)) for f in fields(Limits)})


#: seconds to wait for a blob remote's connection to open, unless its config says otherwise
DEFAULT_CONNECT_TIMEOUT = 10.0
#: seconds to wait for any read of a blob remote's answer, unless its config says otherwise
DEFAULT_READ_TIMEOUT = 60.0
#: the largest timeout a config may set (one hour)
MAX_TIMEOUT = 3600.0
_TIMEOUT_KEYS = ("connect_timeout", "read_timeout")


def env_seconds(name: str) -> float | None:
    """Seconds from the environment variable ``name`` (a timeout the user set for this run);
    None when unset or empty; :class:`UsageError` for anything but a number in
    ``(0, MAX_TIMEOUT]``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT:
        raise UsageError(f"{name}={raw!r}: must be a number of seconds above 0 and at most {MAX_TIMEOUT:.0f}")
    return value


@dataclass(frozen=True)
class RemoteSpec:
    """A blob remote as declared in config: its name, URL and fsspec options, and the
    timeouts of its network calls in seconds (None: the default, see :mod:`.sharing.blobstore`)."""

    name: str
    url: str
    endpoint_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    connect_timeout: float | None = None
    read_timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "url": self.url}
        if self.endpoint_url:
            d["endpoint_url"] = self.endpoint_url
        if self.options:
            d["options"] = dict(self.options)
        for key in _TIMEOUT_KEYS:
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    def capped_timeouts(self) -> tuple[float | None, float | None]:
        """``(connect, read)`` no longer than the defaults: what a config read from a Git URL
        (hostile data) may set; it can make a call give up sooner, never wait longer."""
        connect, read = self.connect_timeout, self.read_timeout
        return (
            None if connect is None else min(connect, DEFAULT_CONNECT_TIMEOUT),
            None if read is None else min(read, DEFAULT_READ_TIMEOUT),
        )


@dataclass(frozen=True)
class Condition:
    """``<metric> <op> <number>``, parsed from a rule's ``when`` list."""

    metric: str
    op: str
    value: float
    text: str

    def check(self, metrics: dict[str, Any]) -> tuple[bool, str]:
        """``(holds, explanation)`` on a version's metrics."""
        if self.metric not in metrics:
            return False, f"{self.text} failed: metric {self.metric!r} is missing"
        got = metrics[self.metric]
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isfinite(got):
            return False, f"{self.text} failed: metric {self.metric!r} is {got!r}, not a finite number"
        if _OPS[self.op](got, self.value):
            return True, f"{self.text} held ({self.metric} = {got})"
        return False, f"{self.text} failed ({self.metric} = {got})"


def parse_condition(text: object, key: str = "promote.when") -> Condition:
    if not isinstance(text, str):
        raise _error(key, f"condition {text!r} must be a string like 'accuracy >= 0.9'")
    m = _COND_RE.fullmatch(text)
    if not m:
        raise _error(
            key,
            f"invalid condition {text!r}: expected '<metric> <op> <number>' with op one of >=, >, "
            f"<=, <, ==, !=",
        )
    value = float(m["value"])
    if not math.isfinite(value):
        raise _error(key, f"invalid condition {text!r}: the number must be finite")
    return Condition(m["metric"], m["op"], value, " ".join(text.split()))


@dataclass(frozen=True)
class PromoteRule:
    """One ``[[promote]]`` rule: promote ``model`` into ``to`` (from ``from_stage``) when
    every condition holds; ``index`` is its 1-based position in the file."""

    model: str
    to: str
    from_stage: str | None
    when: tuple[Condition, ...]
    index: int

    def describe(self) -> str:
        src = f"{self.from_stage} -> " if self.from_stage else ""
        conds = ", ".join(c.text for c in self.when) or "always"
        return f"{self.model}: {src}{self.to} when {conds}"


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. ``raw`` is the TOML table as read (for writers)."""

    stages: dict[str, bool] = field(default_factory=lambda: dict(SINGLE_HOLDER_DEFAULT))
    remotes: dict[str, RemoteSpec] = field(default_factory=dict)
    rules: tuple[PromoteRule, ...] = ()
    limits: Limits = field(default_factory=Limits)
    raw: dict[str, Any] = field(default_factory=dict)
    #: ``[events] tags``: write an event tag per promote/archive/rollback (docs/events.md)
    event_tags: bool = False
    #: ``[signatures] verify``: "off", "warn" or "require" for reads (docs/governance.md,
    #: "Consumers"); None: not set ("warn" once a policy exists, else "off")
    verify_signatures: str | None = None


# ---------------------------------------------------------------------- parsing
def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise _error(f"[{key}]", "must be a table")
    return value


def _stages(raw: dict[str, Any]) -> dict[str, bool]:
    table = dict(SINGLE_HOLDER_DEFAULT)
    for name, spec in _table(raw, "stages").items():
        if not valid_custom_stage_name(name):
            raise _error(f"stages.{name}", "invalid custom stage name (lowercase letters, digits, '_', '-')")
        single = spec.get("single", True) if isinstance(spec, dict) else True
        if not isinstance(single, bool):
            raise _error(f"stages.{name}.single", f"must be true or false, not {single!r}")
        table[name] = single
    return table


def _remote(name: str, spec: Any) -> RemoteSpec:
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str) or not spec["url"].strip():
        raise _error(f"remotes.{name}", 'needs a url = "..."')
    options = spec.get("options", {})
    if not isinstance(options, dict):
        raise _error(f"remotes.{name}.options", "must be a table")
    endpoint = spec.get("endpoint_url")
    if endpoint is not None and not isinstance(endpoint, str):
        raise _error(f"remotes.{name}.endpoint_url", "must be a string")
    connect, read = (_timeout(f"remotes.{name}.{key}", spec.get(key)) for key in _TIMEOUT_KEYS)
    return RemoteSpec(name, spec["url"].strip(), endpoint or None, dict(options), connect, read)


def _timeout(key: str, value: object) -> float | None:
    """A timeout in seconds from config: a number above 0 and at most :data:`MAX_TIMEOUT`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
        raise _error(key, f"must be a number of seconds above 0 and at most {MAX_TIMEOUT:.0f}, not {value!r}")
    return float(value)


def _rules(raw: dict[str, Any], stages: dict[str, bool]) -> tuple[PromoteRule, ...]:
    items = raw.get("promote", [])
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise _error("[[promote]]", "must be an array of tables")
    custom = {k: v for k, v in stages.items() if k not in BUILTIN_STAGES}
    rules = []
    for i, r in enumerate(items, 1):
        key = f"promotion rule #{i}"
        if not isinstance(r, dict):
            raise _error(key, "must be a table")
        unknown = set(r) - {"model", "from", "to", "when"}
        if unknown:
            raise _error(key, f"unknown key(s): {', '.join(sorted(unknown))}")
        try:
            model = validate_model_name(r.get("model"))
            to = normalize_stage(r.get("to"), custom)
            src = normalize_stage(r["from"], custom) if r.get("from") is not None else None
        except UsageError as exc:
            raise _error(key, str(exc)) from exc
        when = r.get("when", [])
        if isinstance(when, str):
            when = [when]
        if not isinstance(when, list):
            raise _error(f"{key}.when", "must be a list of conditions")
        rules.append(PromoteRule(model, to, src, tuple(parse_condition(c, f"{key}.when") for c in when), i))
    return tuple(rules)


def _limits(raw: dict[str, Any]) -> Limits:
    known = {f.name for f in fields(Limits)}
    values: dict[str, int] = {}
    for key, value in _table(raw, "limits").items():
        if key not in known:
            raise _error(f"limits.{key}", f"unknown key (known: {', '.join(sorted(known))})")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _error(f"limits.{key}", f"must be a positive integer, not {value!r}")
        values[key] = value
    return Limits(**values)


def _event_tags(raw: dict[str, Any]) -> bool:
    for key, value in _table(raw, "events").items():
        if key != "tags":
            raise _error(f"events.{key}", "unknown key (known: tags)")
        if not isinstance(value, bool):
            raise _error("events.tags", f"must be true or false, not {value!r}")
    return bool(_table(raw, "events").get("tags", False))


#: the values of ``[signatures] verify``
SIGNATURE_MODES = ("off", "warn", "require")


def _verify_signatures(raw: dict[str, Any]) -> str | None:
    table = _table(raw, "signatures")
    for key in table:
        if key != "verify":
            raise _error(f"signatures.{key}", "unknown key (known: verify)")
    value = table.get("verify")
    if value is not None and value not in SIGNATURE_MODES:
        raise _error(
            "signatures.verify", f"must be one of {', '.join(map(repr, SIGNATURE_MODES))}, not {value!r}"
        )
    return value


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a TOML table into a :class:`Config`; a problem is a :class:`ConfigError`."""
    stages = _stages(raw)
    remotes = {name: _remote(name, spec) for name, spec in sorted(_table(raw, "remotes").items())}
    return Config(
        stages=stages,
        remotes=remotes,
        rules=_rules(raw, stages),
        limits=_limits(raw),
        raw=raw,
        event_tags=_event_tags(raw),
        verify_signatures=_verify_signatures(raw),
    )


def parse_remote_config(data: bytes, where: str) -> Config:
    """Validate the ``config.toml`` bytes a remote holds (read by URL, so written by whoever
    controls that remote): decoding is bounded (``_bounded.check_cost``, no RecursionError),
    and its ``[limits]`` can only tighten the built-in defaults, never raise them."""
    from dataclasses import replace

    from .._bounded import check_cost
    from .._errors import IntegrityError

    try:
        check_cost(data, where, separators=b",=\n")
        raw = tomllib.loads(data.decode("utf-8"))
    except IntegrityError as exc:
        raise ConfigError(str(exc)) from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"{where} is not valid TOML: {str(exc)[:200]}") from exc
    try:
        config = parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return replace(config, limits=Limits().tightened_by(config.limits))


def load_config(uniflow_dir: Path) -> Config:
    """Read and validate ``<uniflow_dir>/config.toml`` (a missing file is the default config)."""
    path = uniflow_dir / "config.toml"
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        return Config()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{_FILE} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {_FILE}: {exc.strerror}") from exc
    return parse_config(raw)


def save_config(uniflow_dir: Path, raw: dict[str, Any]) -> None:
    """Validate ``raw`` and write it as ``config.toml`` (atomically: temp file + rename).

    The file is edited, not regenerated: keys whose values did not change keep their place,
    their comments and their style; only what differs from ``raw`` is added, replaced or
    removed (a hand-written, reviewed config stays readable after ``uniflow remote add``).
    """
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    parse_config(raw)
    path = uniflow_dir / "config.toml"
    try:
        text = path.read_text() if path.exists() else CONFIG_HEADER
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(f"{_FILE} is not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {_FILE}: {exc}") from exc
    _edit(doc, raw)
    tmp = path.with_suffix(f".toml.{os.getpid()}.tmp")
    try:
        tmp.write_text(tomlkit.dumps(doc))
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {_FILE}: {exc.strerror}") from exc


def _edit(table: MutableMapping[str, Any], new: dict[str, Any]) -> None:
    """Make ``table`` (a tomlkit container) equal ``new``, touching only what differs."""
    for key in [k for k in table if k not in new]:
        del table[key]
    for key, value in new.items():
        old = table.get(key)
        if isinstance(value, dict) and isinstance(old, MutableMapping):
            _edit(old, value)
        elif old is None or _plain(old) != value:
            table[key] = value


def _plain(item: Any) -> Any:
    unwrap = getattr(item, "unwrap", None)
    return unwrap() if callable(unwrap) else item


def init_layout(uniflow_dir: Path) -> bool:
    """Create ``.uniflow/`` with its config and .gitignore; True if anything was created."""
    created = False
    try:
        uniflow_dir.mkdir(parents=True, exist_ok=True)
        gi = uniflow_dir / ".gitignore"
        if not gi.exists():
            gi.write_text(GITIGNORE)
            created = True
        cfg = uniflow_dir / "config.toml"
        if not cfg.exists():
            cfg.write_text(CONFIG_HEADER)
            created = True
    except OSError as exc:
        raise ConfigError(f"cannot create {uniflow_dir}: {exc.strerror}") from exc
    return created


class ConfigSource:
    """The configuration of one repository, read once and re-read on :meth:`reload`."""

    def __init__(self, uniflow_dir: Path) -> None:
        self.uniflow_dir = uniflow_dir
        self._config: Config | None = None

    def get(self) -> Config:
        if self._config is None:
            self._config = load_config(self.uniflow_dir)
        return self._config

    def reload(self) -> None:
        self._config = None

    def init(self) -> bool:
        return init_layout(self.uniflow_dir)

    def save(self, raw: dict[str, Any]) -> None:
        save_config(self.uniflow_dir, raw)
        self.reload()
