"""A registry read from a Git URL, without a clone: the :class:`Repository` behind
``ModelRegistry(url)``, ``uniflow --repo URL`` and ``uniflow get URL``.

* **Git side**: the per-user bare mirror of the URL (:mod:`uniflow.sharing.mirror`), read
  through :class:`~uniflow._git.GitRepo` behind the same gates as a clone (manifests through
  ``VersionIndex``/``_manifest.unpack``, lifecycles through ``Lifecycle``).
* **Configuration**: ``.uniflow/config.toml`` of the remote's default branch, bounded and
  validated with ``_config.parse_config`` (stages, limits, blob remotes), never written.
* **Bytes**: one content-addressed chunk cache shared by every URL
  (``<cache>/store/.uniflow/objects``), filled from the blob remote, each chunk verified on
  arrival (``ObjectStore.add_chunk``) and on every read.

Which blob remote (docs/remote.md, SECURITY.md "Blob remotes named by a Git URL"): the one
given (``blob=`` / ``--blob``, trusted like any argument), else those the remote's config
declares, the default first. The remote's config is hostile data: it may name an object
store (``s3``, ``gs``/``gcs``, ``az``/``abfs``) without ``options`` (an ``endpoint_url`` only
for S3, whose signed requests never carry the secret key); it may name a directory only
when the Git URL itself is on this machine, and only one that resolves (symlinks followed)
inside the directory holding that repository. Anything else is refused with one line.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._config import Config, ConfigSource, RemoteSpec, parse_config
from .._errors import ConfigError, ReadOnlyRegistryError, RemoteError, RepositoryError, UsageError
from .._objcache import cache_home
from .._repo import Repository
from .._store import ObjectStore
from .blobs import LocalRemote, download_chunks, get_remote_spec, list_remotes, open_remote
from .giturl import GitUrl, parse_git_url
from .mirror import CONFIG_PATH, Mirror, MirrorState

if TYPE_CHECKING:  # pragma: no cover
    from .blobs import BlobRemote

__all__ = ["OBJECT_STORES", "RemoteSource", "UrlBlobFetcher", "blob_remote_for", "store_root"]

#: blob-remote schemes a remote's config may name (object stores; no local or chained URLs)
OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
_S3 = ("s3", "s3a")
MAX_CONFIG_BYTES = 1 << 20


def store_root(home: Path) -> Path:
    """The directory whose ``.uniflow/`` holds the chunk cache shared by every URL."""
    return home / "store"


class RemoteSource:
    """A Git URL to read a registry from; :meth:`open` syncs the mirror and builds the
    :class:`Repository` (nothing touches the network before that)."""

    def __init__(self, url: str, *, offline: bool = False, blob: str | None = None) -> None:
        parsed = parse_git_url(url)
        if parsed is None:
            raise UsageError(f"{url!r} is not a Git URL or a bare repository")
        if blob is not None and (not isinstance(blob, str) or not blob.strip()):
            raise UsageError(f"invalid blob remote URL {blob!r}")
        self.url: GitUrl = parsed
        self.offline = offline
        self.blob = blob.strip() if blob is not None else None

    @property
    def display(self) -> str:
        return self.url.display

    def home(self) -> Path:
        home = cache_home()
        if home is None:
            raise RepositoryError("no cache directory for registries read by URL: set UNIFLOW_CACHE_DIR")
        return home

    def open(self) -> Repository:
        """Sync the mirror (or read it as it is, offline) and build the read-only Repository."""
        home = self.home()
        mirror = Mirror(self.url, home)
        state = mirror.sync(offline=self.offline)
        git = mirror.git()
        config = _remote_config(git, state, self.display)
        root = store_root(home)
        uniflow_dir = root / ".uniflow"
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise RepositoryError(f"cannot create the chunk cache {root}: {exc.strerror}") from exc
        fetcher = UrlBlobFetcher(self.url, config, self.blob)
        store = ObjectStore(uniflow_dir, fetcher=fetcher, durable=False)  # a cache: verified on use
        return Repository(git, root=root, config_source=_FixedConfig(uniflow_dir, config, self.display), store=store)


class _FixedConfig(ConfigSource):
    """The remote's configuration, read once from its default branch; never written."""

    def __init__(self, uniflow_dir: Path, config: Config, url: str) -> None:
        super().__init__(uniflow_dir)
        self._fixed = config
        self._url = url

    def get(self) -> Config:
        return self._fixed

    def reload(self) -> None:
        pass  # the remote's config changes with the next sync, not on reload

    def init(self) -> bool:
        raise ReadOnlyRegistryError(self._url, "init")

    def save(self, raw: dict[str, Any]) -> None:
        raise ReadOnlyRegistryError(self._url, "change the configuration")


def _remote_config(git: Any, state: MirrorState, url: str) -> Config:
    """``.uniflow/config.toml`` of the remote's default branch, validated (default: none)."""
    if state.head is None or state.config_blob is None:
        return Config()
    where = f"{CONFIG_PATH} of {url}"
    try:
        data = git.read_path(state.head, CONFIG_PATH)
    except KeyError:
        raise RemoteError(f"{where} is missing from the mirror; run again without --offline") from None
    if data is None:
        return Config()
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where} is {len(data)} bytes, more than {MAX_CONFIG_BYTES}")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from exc
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


# ---------------------------------------------------------------------- blob remotes
def _scheme(url: str) -> str | None:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else None


def _checked_spec(url: GitUrl, spec: RemoteSpec) -> tuple[RemoteSpec | None, str]:
    """``(spec to use, "")`` if the remote's config may name this blob remote, else
    ``(None, why not)`` (see the module docstring)."""
    target = spec.url
    scheme = _scheme(target)
    if "::" in target:
        return None, "chained fsspec URLs are not allowed from a remote's config"
    if scheme is None or scheme == "file":
        if not url.is_local:
            return None, "a Git repository on another machine may not name a local directory"
        base = url.local_path  # the work tree, or the bare repository itself
        assert base is not None
        raw = Path(target.removeprefix("file://"))
        if str(raw).startswith("~"):
            return None, "'~' paths are not allowed from a remote's config"
        resolved = (raw if raw.is_absolute() else base / raw).resolve()
        fence = base.parent.resolve()
        if resolved != fence and fence not in resolved.parents:
            return None, f"it resolves to {resolved}, outside {fence} (the directory holding the repository)"
        return RemoteSpec(spec.name, str(resolved)), ""
    if scheme not in OBJECT_STORES:
        return None, f"scheme {scheme!r} is not an object store ({', '.join(OBJECT_STORES)})"
    endpoint = spec.endpoint_url if scheme in _S3 else None
    if spec.endpoint_url and scheme not in _S3:
        return None, "endpoint_url is honoured from a remote's config for S3 only"
    return RemoteSpec(spec.name, target, endpoint, {}), ""


def blob_remote_for(url: GitUrl, config: Config, blob: str | None) -> list[RemoteSpec]:
    """The blob remotes to read chunks from, in order; a one-line :class:`RemoteError` when
    none is known or every declared one is refused."""
    if blob is not None:
        return [RemoteSpec("--blob", blob)]
    default = get_remote_spec(config, None)
    specs = ([default] if default else []) + [s for s in list_remotes(config) if default is None or s.name != default.name]
    if not specs:
        raise RemoteError(
            f"no blob remote known for {url.display}: its default branch has no [remotes] in {CONFIG_PATH}; "
            "pass --blob URL (blob= in Python)"
        )
    allowed: list[RemoteSpec] = []
    refusals: list[str] = []
    for spec in specs:
        ok, why = _checked_spec(url, spec)
        if ok is not None:
            allowed.append(ok)
        else:
            refusals.append(f"blob remote {spec.name!r} ({spec.url}) refused: {why}")
    if not allowed:
        raise RemoteError(f"{refusals[0]}; pass --blob URL (blob= in Python) to choose one yourself")
    return allowed


class UrlBlobFetcher:
    """The chunk cache's fetcher for a registry read by URL: missing chunks come from the
    blob remote(s) :func:`blob_remote_for` names, verified before they are stored."""

    def __init__(self, url: GitUrl, config: Config, blob: str | None) -> None:
        self.url = url
        self.config = config
        self.blob = blob
        self._remotes: list[BlobRemote] | None = None

    def remotes(self) -> list[BlobRemote]:
        if self._remotes is None:
            out: list[BlobRemote] = []
            for spec in blob_remote_for(self.url, self.config, self.blob):
                remote = open_remote(spec, Path.cwd())
                if isinstance(remote, LocalRemote) and not remote.root.is_dir():
                    raise RemoteError(f"blob remote {spec.name!r} ({spec.url}) is unreachable: no such directory")
                out.append(remote)
            self._remotes = out
        return self._remotes

    def __call__(self, store: ObjectStore, digests: list[str]) -> None:
        missing = store.missing(digests)
        remotes = self.remotes()
        for remote in remotes:
            if not missing:
                return
            download_chunks(store, remote, missing, skip_missing=True)
            missing = store.missing(missing)
        if missing:
            first = remotes[0]
            raise RemoteError(
                f"blob remote {first.name!r} ({first.url}) lacks {len(missing)} chunk(s) "
                f"(first: {missing[0][:16]}) needed from {self.url.display}; push them from a clone that "
                "has them (`uniflow push --all`)"
            )

