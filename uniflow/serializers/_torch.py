"""PyTorch modules, state dicts and tensors as ``model.safetensors`` (never pickle).

Meta keys: ``kind`` ("module" | "state_dict" | "tensor"), ``file``; for modules also
``class_module``, ``class_qualname``, ``init_kwargs``, ``init_source`` ("get_config" |
"signature" | "container" | "transformers_config"), ``missing_init_args``, ``training``,
``torch_version``, and where they apply ``frozen`` (names of parameters whose
``requires_grad`` is off), ``extra_repr`` (a ``torch.nn`` class's
``extra_repr()``, checked after rebuilding), ``transformers_config`` (a transformers model's
config as JSON) and ``submodules`` (when the module is a container: a flat pre-order list of
the specs of its children and of nested containers' children, each with its dotted
``name``, or ``{"name", "same_as"}`` for a module registered twice); for state dicts, and
modules with tied weights, ``aliases`` (tied names -> the name actually stored); for
tensors ``requires_grad``.
Loading accepts ``into=`` (a module) for the "module" and "state_dict" kinds.

Rebuilding a module imports the class the manifest names only under the rule of
:mod:`uniflow.serializers._trust` (already imported, or from an installed distribution
outside the work tree), or with ``trust=True``; otherwise :class:`UnsafeLoadError` asks
for ``model=`` (an instance to load the weights into) or ``trust=True``. A class is called
only with recorded arguments: one whose required arguments were not recorded is never
called (the error asks for ``model=``). ``nn.Sequential``, ``nn.ModuleList`` and
``nn.ModuleDict`` (and subclasses keeping their ``__init__``) are rebuilt empty and filled
with their rebuilt children. A transformers model is rebuilt from its recorded config only
with ``trust=True`` (a config can name code to run, such as attention kernels).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import SerializationError, UnsafeLoadError
from ._base import Serializer, Streamed, StreamedFile
from ._trust import Untrusted, import_untrusted

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["TorchSerializer"]

FILE = "model.safetensors"
_TENSOR_KEY = "tensor"


def is_json_safe(value: Any) -> bool:
    """True for None/bool/int/finite float/str and lists, tuples, str-keyed dicts of those."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(is_json_safe(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_safe(v) for k, v in value.items())
    return False


def _jsonify(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonify(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonify(v) for k, v in value.items()}
    return value


def _init_kwargs(module: Any) -> tuple[dict[str, Any], str, list[str]]:
    """How to call ``type(module)(**kwargs)`` again: (kwargs, source, required args not found)."""
    get_config = getattr(module, "get_config", None)
    if callable(get_config):
        try:
            config = get_config()
        except Exception:  # a user hook; fall back to the signature
            config = None
        if isinstance(config, dict) and is_json_safe(config):
            return _jsonify(config), "get_config", []
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    try:
        params = list(inspect.signature(type(module).__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = getattr(module, p.name, inspect.Parameter.empty)
        if value is not inspect.Parameter.empty and is_json_safe(value):
            kwargs[p.name] = _jsonify(value)
        elif p.default is inspect.Parameter.empty:
            missing.append(p.name)
    return kwargs, "signature", missing


#: longest ``extra_repr()`` recorded (torch.nn's are one short line)
_MAX_EXTRA_REPR = 4096


def _unwrap(module: Any, torch: Any) -> Any:
    """The module inside ``torch.compile``'s ``OptimizedModule`` and ``nn.DataParallel`` /
    ``DistributedDataParallel`` wrappers (nested ones too): what is registered and loaded,
    without the wrappers' ``_orig_mod.`` / ``module.`` key prefixes."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    compiled: Any = getattr(eval_frame, "OptimizedModule", None) if eval_frame is not None else None
    parallel = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    while True:
        if isinstance(module, parallel):
            module = module.module
        elif isinstance(compiled, type) and isinstance(module, compiled):
            module = getattr(module, "_orig_mod")  # noqa: B009 (mypy narrows module to object)
        else:
            return module


def _container_base(cls: Any, torch: Any) -> Any:
    """The torch container (Sequential, ModuleList, ModuleDict) whose own ``__init__`` ``cls``
    uses, so that an empty ``cls()`` filled with its children is the module; else None."""
    if not isinstance(cls, type):
        return None
    for base in (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict):
        if issubclass(cls, base):
            below = cls.__mro__[: cls.__mro__.index(base)]
            return base if all("__init__" not in vars(k) for k in below) else None
    return None


def _transformers_config(module: Any) -> dict[str, Any] | None:
    """A transformers model's full config as JSON, or None (not one, or not JSON-safe)."""
    tf = sys.modules.get("transformers")
    pretrained: Any = getattr(tf, "PreTrainedModel", None) if tf is not None else None
    if not (isinstance(pretrained, type) and isinstance(module, pretrained)):
        return None
    try:
        config = json.loads(getattr(module, "config").to_json_string(use_diff=False))  # noqa: B009
    except Exception:  # a config that does not serialize: rebuilt only with model=
        return None
    return config if isinstance(config, dict) and is_json_safe(config) else None


def _rnn_kwargs(module: Any, torch: Any) -> dict[str, Any] | None:
    """The arguments of ``nn.RNN``/``LSTM``/``GRU``, whose ``__init__`` takes ``*args,
    **kwargs``: the attributes named like ``RNNBase``'s parameters (its ``mode`` is the
    class's own; ``proj_size`` is LSTM's only), and ``nonlinearity`` for ``nn.RNN``; None
    for other classes."""
    if type(module) not in (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU):
        return None
    names = [n for n in inspect.signature(torch.nn.RNNBase.__init__).parameters if n not in ("self", "mode")]
    if type(module) is not torch.nn.LSTM:
        names.remove("proj_size")  # only LSTM takes it
    if type(module) is torch.nn.RNN:
        names.append("nonlinearity")
    values = {n: getattr(module, n, None) for n in names}
    return {n: _jsonify(v) for n, v in values.items() if v is not None and is_json_safe(v)}


def _module_spec(module: Any, torch: Any) -> dict[str, Any]:
    """How to build ``module`` again (class, arguments), without its children."""
    cls = type(module)
    spec: dict[str, Any] = {"class_module": cls.__module__, "class_qualname": cls.__qualname__}
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    if _container_base(cls, torch) is not None:
        source = "container"
    elif (rnn := _rnn_kwargs(module, torch)) is not None:
        kwargs, source = rnn, "signature"
    elif (config := _transformers_config(module)) is not None:
        source = "transformers_config"
        spec["transformers_config"] = config
    else:
        kwargs, source, missing = _init_kwargs(module)
    spec.update(init_kwargs=kwargs, init_source=source, missing_init_args=missing)
    if cls.__module__.startswith("torch.nn."):
        text = module.extra_repr()
        if isinstance(text, str) and len(text) <= _MAX_EXTRA_REPR:
            spec["extra_repr"] = text
    return spec


def _submodule_specs(root: Any, torch: Any) -> list[dict[str, Any]]:
    """The specs of a container's children, and of nested containers' children, in pre-order
    (a parent before its children); a module met twice is recorded as ``same_as``."""
    out: list[dict[str, Any]] = []
    seen: dict[int, str] = {id(root): ""}
    todo = [(name, child) for name, child in reversed(list(root._modules.items()))]
    while todo:
        name, module = todo.pop()
        if module is None:
            continue  # an empty slot holds no weights and runs nothing
        if id(module) in seen:
            out.append({"name": name, "same_as": seen[id(module)]})
            continue
        seen[id(module)] = name
        out.append({"name": name, **_module_spec(module, torch)})
        if _container_base(type(module), torch) is not None:
            todo.extend((f"{name}.{n}", c) for n, c in reversed(list(module._modules.items())))
    return out


def _shares_storage(tensors: dict[str, torch.Tensor]) -> bool:
    """True when two non-empty tensors of ``tensors`` view one storage (tied weights, or a
    view of another tensor): what safetensors' ``save_model`` resolves and a plain
    stream of each tensor's bytes would not."""
    seen: set[tuple[Any, ...]] = set()
    for t in tensors.values():
        if t.numel() == 0:
            continue
        storage = (t.device.type, t.device.index, t.untyped_storage().data_ptr())
        if storage in seen:
            return True
        seen.add(storage)
    return False


def _dedupe(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Make tensors safetensors accepts: exact duplicates (tied weights) become aliases,
    other views of an already stored storage become copies."""
    import torch

    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    storages: set[tuple[Any, ...]] = set()
    for name, t in tensors.items():
        t = t.detach()
        if t.layout != torch.strided:
            raise SerializationError(f"tensor {name!r} is sparse; convert it with .to_dense() first")
        if t.device.type == "meta":
            raise SerializationError(f"tensor {name!r} is on the meta device and has no data")
        if t.numel() == 0:
            out[name] = t.contiguous()
            continue
        storage = (t.device.type, t.device.index, t.untyped_storage().data_ptr())
        key = (*storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key in seen:
            aliases[name] = seen[key]
        elif storage in storages:
            seen[key] = name
            out[name] = t.clone(memory_format=torch.contiguous_format)
        else:
            seen[key] = name
            storages.add(storage)
            out[name] = t.contiguous()
    return out, aliases


def _stored_aliases(path: Path) -> dict[str, str]:
    """Tied names -> the name stored, as ``safetensors.torch.save_model`` records them in the
    file's header metadata (it stores a tied tensor once)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        stored = set(f.keys())
        metadata = f.metadata() or {}
    return {k: v for k, v in metadata.items() if v in stored and k not in stored}


def _is_state_dict(obj: Any, torch: Any) -> bool:
    return (
        isinstance(obj, dict)
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


_QUALNAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _resolve_class(module_name: str, qualname: str, *, trust: bool = False, near: Path | None = None) -> Any:
    """The class ``module_name.qualname``; the module is imported only under the trust rule
    (:class:`Untrusted` otherwise), checked before anything is imported."""
    if "<locals>" in qualname:
        raise ImportError(f"{qualname} is defined inside a function")
    if not _QUALNAME_RE.fullmatch(qualname):
        raise ImportError(f"{qualname!r} is not a class name")
    obj: Any = import_untrusted(module_name, trust=trust, near=near)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _safetensors_parts(tensors: dict[str, Any], torch: Any) -> list[memoryview | bytes] | None:
    """The bytes ``safetensors.torch.save_file(tensors)`` writes, as ``[header, tensor, ...]``
    (each tensor a view of its own memory), or None if they cannot be reproduced exactly.

    The layout is safetensors': tensors ordered as its writer orders them (asked of
    safetensors itself, on empty stand-ins with the same names and dtypes), a compact JSON
    header in that order padded with spaces to a multiple of 8, its length as 8 bytes."""
    import ctypes

    import safetensors.torch as st

    names = {dtype: name for name, dtype in getattr(st, "_TYPES", {}).items()}
    specs: dict[str, tuple[str, list[int], Any]] = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.device.type != "cpu" or t.dtype not in names:
            return None
        if t.layout != torch.strided or not t.is_contiguous() or t.is_conj() or t.is_neg():
            return None
        specs[name] = (names[t.dtype], list(t.shape), t)
    stand_ins = {name: torch.empty((0,), dtype=t.dtype) for name, (_, _, t) in specs.items()}
    raw = st.save(stand_ins)
    n = int.from_bytes(raw[:8], "little")
    order = [k for k in json.loads(raw[8 : 8 + n]) if k != "__metadata__"]
    if sorted(order) != sorted(specs):
        return None
    header: dict[str, Any] = {}
    views: list[memoryview | bytes] = []
    offset = 0
    for name in order:
        dtype, shape, t = specs[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        if nbytes:
            views.append(memoryview((ctypes.c_ubyte * nbytes).from_address(t.data_ptr())).cast("B"))
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    head += b" " * (-len(head) % 8)
    return [len(head).to_bytes(8, "little") + head, *views]


class TorchSerializer(Serializer):
    name = "torch"
    framework = "pytorch"
    aliases = ("torch", "pytorch", "pt")
    priority = 50

    def can_save(self, obj: Any) -> bool:
        torch = sys.modules.get("torch")
        if torch is None:
            return False
        if isinstance(obj, (torch.nn.Module, torch.Tensor)):
            return True
        return isinstance(obj, dict) and len(obj) > 0 and _is_state_dict(obj, torch)

    def save(self, obj: Any, dest: Path, *, trust: bool = False) -> dict[str, Any]:
        import safetensors.torch as st
        import torch

        path = Path(dest) / FILE
        try:
            if isinstance(obj, torch.nn.Module):
                return self._save_module(_unwrap(obj, torch), path)
            if isinstance(obj, torch.Tensor):
                data, _ = _dedupe({_TENSOR_KEY: obj})
                st.save_file(data, str(path))
                return {"kind": "tensor", "file": FILE, "requires_grad": bool(obj.requires_grad)}
            if _is_state_dict(obj, torch):
                data, aliases = _dedupe(obj)
                st.save_file(data, str(path))
                return {"kind": "state_dict", "file": FILE, "aliases": aliases}
        except SerializationError:
            raise
        except Exception as exc:  # safetensors / torch raise many types
            raise SerializationError(f"cannot save {type(obj).__name__} as safetensors: {exc}") from exc
        raise SerializationError(
            f"the torch serializer saves nn.Module, dict[str, Tensor] or Tensor, not {type(obj).__name__}"
        )

    def stream(self, obj: Any, *, trust: bool = False) -> Streamed | None:
        """``model.safetensors`` as :meth:`save` writes it, streamed from the tensors' own
        memory: the header, then a view of each tensor's bytes (no copy). None (register
        then saves to a temporary file) for what this does not reproduce byte for byte:
        a module with tied weights (save_model records them as header metadata), tensors
        off the CPU, a dtype outside safetensors' table, a big-endian machine."""
        import torch

        if sys.byteorder != "little":
            return None
        try:
            return self._stream(obj, torch)
        except SerializationError:
            raise  # what save() would say too (a sparse or meta tensor)
        except Exception:  # anything else: save() reports it, or does it the long way
            return None

    def _stream(self, obj: Any, torch: Any) -> Streamed | None:
        if isinstance(obj, torch.nn.Module):
            obj = _unwrap(obj, torch)
            state = obj.state_dict()
            if not all(isinstance(v, torch.Tensor) for v in state.values()):
                return None  # save() explains the error
            if _shares_storage(state):
                return None  # tied weights: save_model records them; saved the long way
            data = {k: v.contiguous() for k, v in state.items()}
            meta = self._module_meta(obj)
        elif isinstance(obj, torch.Tensor):
            data, _ = _dedupe({_TENSOR_KEY: obj})
            meta = {"kind": "tensor", "file": FILE, "requires_grad": bool(obj.requires_grad)}
        elif _is_state_dict(obj, torch):
            data, aliases = _dedupe(obj)
            meta = {"kind": "state_dict", "file": FILE, "aliases": aliases}
        else:
            return None
        parts = _safetensors_parts(data, torch)
        if parts is None:
            return None
        return Streamed(meta, [StreamedFile(FILE, parts, keep=list(data.values()))])

    def _save_module(self, module: Any, path: Path) -> dict[str, Any]:
        import safetensors.torch as st

        for key, value in module.state_dict().items():
            if not hasattr(value, "untyped_storage"):
                raise SerializationError(
                    f"state_dict entry {key!r} of {type(module).__name__} is not a tensor; "
                    "pass trust=True with framework='pickle' to pickle the module"
                )
        st.save_model(module, str(path), force_contiguous=True)
        meta = self._module_meta(module)
        aliases = _stored_aliases(path)
        if aliases:
            meta["aliases"] = aliases
        return meta

    @staticmethod
    def _module_meta(module: Any) -> dict[str, Any]:
        import torch

        meta: dict[str, Any] = {"kind": "module", "file": FILE, **_module_spec(module, torch)}
        if meta["init_source"] == "container":
            meta["submodules"] = _submodule_specs(module, torch)
        frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
        if frozen:
            meta["frozen"] = frozen
        meta["training"] = bool(module.training)
        meta["torch_version"] = str(getattr(sys.modules.get("torch"), "__version__", ""))
        return meta

    def load(self, src: Path, meta: dict[str, Any], *, trust: bool = False, into: Any = None) -> Any:
        import safetensors.torch as st

        path = Path(src) / FILE
        kind = meta.get("kind")
        if kind == "module":
            return self._load_module(path, meta, into, trust)
        try:
            tensors = st.load_file(str(path))
        except Exception as exc:
            raise SerializationError(f"cannot read {path.name}: {exc}") from exc
        if kind == "tensor":
            if _TENSOR_KEY not in tensors:
                raise SerializationError(f"{path.name} holds no tensor named {_TENSOR_KEY!r}")
            return tensors[_TENSOR_KEY].requires_grad_(bool(meta.get("requires_grad", False)))
        if kind == "state_dict":
            for alias, target in dict(meta.get("aliases") or {}).items():
                if target not in tensors:
                    raise SerializationError(f"tied tensor {alias!r} refers to missing {target!r}")
                tensors[alias] = tensors[target]
            if into is not None:
                self._load_state_into(into, tensors)
                return into
            return tensors
        raise SerializationError(f"unknown torch payload kind {kind!r} in manifest")

    @staticmethod
    def _load_state_into(into: Any, tensors: dict[str, Any]) -> None:
        try:
            into.load_state_dict(tensors, strict=True)
        except Exception as exc:
            raise SerializationError(f"weights do not fit {type(into).__name__}: {exc}") from exc

    def _load_module(self, path: Path, meta: dict[str, Any], into: Any, trust: bool = False) -> Any:
        import safetensors.torch as st
        import torch

        where = _where(meta)
        rebuilt = into is None
        if rebuilt:
            into = _rebuild(meta, torch, trust, path)
            _freeze(into, meta.get("frozen"))
        elif not isinstance(into, torch.nn.Module):
            raise SerializationError(f"model= must be a torch.nn.Module, got {type(into).__name__}")
        try:
            st.load_model(_unwrap(into, torch), str(path), strict=True)
        except Exception as exc:
            if rebuilt:
                raise SerializationError(
                    f"the weights of {where} do not fit the module rebuilt from its manifest ({exc}); "
                    f"{_hint(where)}"
                ) from exc
            raise SerializationError(f"weights of {where} do not fit {type(into).__name__}: {exc}") from exc
        into.train(bool(meta.get("training", False)))
        return into


# ---------------------------------------------------------------------- rebuilding a module
def _where(spec: dict[str, Any]) -> str:
    return f"{spec.get('class_module')}.{spec.get('class_qualname')}"


def _hint(where: str) -> str:
    return f"pass model=<an instance of {where}> to load the weights into it"


def _import_module_class(
    spec: dict[str, Any], what: str, hint: str, torch: Any, trust: bool, near: Path
) -> Any:
    """The ``torch.nn.Module`` subclass ``spec`` names, imported under the trust rule."""
    where = _where(spec)
    try:
        cls = _resolve_class(str(spec["class_module"]), str(spec["class_qualname"]), trust=trust, near=near)
    except Untrusted as exc:
        raise UnsafeLoadError(
            f"refusing to import {what}{where}, named by the model's manifest: {exc}; {hint}, "
            "or pass trust=True to import it (only if you trust who registered this model)"
        ) from exc
    except Exception as exc:
        raise SerializationError(f"cannot import class {what}{where} ({exc}); {hint}") from exc
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise SerializationError(f"{what}{where} is not a torch.nn.Module subclass; {hint}")
    return cls


def _tuples(value: Any) -> Any:
    """``value`` with its lists (nested too) as tuples: what torch.nn layers take and keep."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _from_config(cls: Any, config: Any) -> Any:
    """A transformers model built from its recorded config (only ever with trust=True)."""
    from_dict = getattr(getattr(cls, "config_class", None), "from_dict", None)
    if not isinstance(config, dict) or not callable(from_dict):
        raise SerializationError("the manifest records no usable transformers config")
    return cls(from_dict(dict(config)))


def _construct(spec: dict[str, Any], what: str, hint: str, torch: Any, trust: bool, near: Path) -> Any:
    """One module built from its recorded spec (a container comes back empty). A class is
    only called with recorded arguments: missing required ones are never guessed."""
    where = _where(spec)
    source = spec.get("init_source")
    if source == "transformers_config" and not trust:
        raise UnsafeLoadError(
            f"{what}{where} is a transformers model, rebuilt from its recorded config only with "
            f"trust=True (a config can name code to run); {hint} (e.g. built from its config), "
            "or register the directory save_pretrained writes and load it with from_pretrained"
        )
    cls = _import_module_class(spec, what, hint, torch, trust, near)
    missing = [str(m) for m in spec.get("missing_init_args") or []]
    if source not in ("container", "transformers_config") and missing:
        raise SerializationError(
            f"cannot rebuild {what}{where}: its arguments {', '.join(missing)} were not recorded; {hint}"
        )
    try:
        if source == "container":
            if _container_base(cls, torch) is None:
                raise SerializationError(f"{what}{where} is not a torch container; {hint}")
            module = cls()
        elif source == "transformers_config":
            module = _from_config(cls, spec.get("transformers_config"))
        else:
            kwargs = dict(spec.get("init_kwargs") or {})
            if cls.__module__.startswith("torch.nn."):  # JSON made their tuples lists
                kwargs = {k: _tuples(v) for k, v in kwargs.items()}
            module = cls(**kwargs)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"cannot construct {what}{where}: {exc}; {hint}") from exc
    want = spec.get("extra_repr")
    if want is not None and module.extra_repr() != want:
        raise SerializationError(
            f"the rebuilt {what}{where} is {module.extra_repr()!r}, registered as {str(want)!r}; {hint}"
        )
    return module


def _fill(root: Any, subs: Any, hint: str, torch: Any, trust: bool, near: Path) -> None:
    """Add the recorded children to the rebuilt container ``root`` (and to nested containers),
    in the recorded (pre-)order; a ``same_as`` entry adds a module built earlier again."""
    if not isinstance(subs, list):
        raise SerializationError("the manifest's submodules are not a list")
    built: dict[str, Any] = {"": root}
    containers = {""} if _container_base(type(root), torch) is not None else set()
    for spec in subs:
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not name or name in built:
            raise SerializationError(f"invalid submodule entry {str(name)[:80]!r} in the manifest")
        parent, _, leaf = name.rpartition(".")
        if parent not in containers:
            raise SerializationError(f"submodule {name[:80]!r} has no container {parent[:80]!r} to go in")
        target = spec.get("same_as")
        if target is not None:
            if not (isinstance(target, str) and target in built and target) or name.startswith(f"{target}."):
                raise SerializationError(
                    f"submodule {name[:80]!r} repeats {str(target)[:80]!r}, not a module recorded before it"
                )
            module = built[target]
        else:
            module = _construct(spec, f"submodule {name!r} ", hint, torch, trust, near)
            if spec.get("init_source") == "container":
                containers.add(name)
        try:
            built[parent].add_module(leaf, module)
        except Exception as exc:  # torch refuses names such as "" or an existing attribute
            raise SerializationError(f"cannot add submodule {name[:80]!r}: {exc}") from exc
        built[name] = module


def _torch_nn_only(meta: dict[str, Any]) -> bool:
    """True when every class the manifest names is a ``torch.nn`` layer or container."""
    specs = [meta, *(meta.get("submodules") or [])]
    return all(
        isinstance(spec, dict)
        and ("same_as" in spec or str(spec.get("class_module", "")).startswith("torch.nn."))
        for spec in specs
    )


def _build(meta: dict[str, Any], hint: str, torch: Any, trust: bool, path: Path, on_meta: bool) -> Any:
    """The module tree built from the manifest (on the meta device if ``on_meta``), with the
    stored dtypes."""
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        root = _construct(meta, "", hint, torch, trust, path.parent)
        subs = meta.get("submodules")
        if subs is not None:
            _fill(root, subs, hint, torch, trust, path.parent)
    _match_dtypes(root, path)
    return root


def _rebuild(meta: dict[str, Any], torch: Any, trust: bool, path: Path) -> Any:
    """The module the manifest describes, built from recorded classes and arguments, with the
    stored dtypes. A tree of ``torch.nn`` classes only is built on the meta device, its
    tensors' shapes checked against the stored ones, and only then given memory (nothing is
    allocated, nor randomly initialised, for shapes the stored weights do not have)."""
    hint = _hint(_where(meta))
    if not _torch_nn_only(meta):
        return _build(meta, hint, torch, trust, path, on_meta=False)
    for spec in [meta, *(meta.get("submodules") or [])]:
        if "same_as" not in spec:  # import outside the meta context: module globals stay real
            _import_module_class(spec, "", hint, torch, trust, path.parent)
    root = _build(meta, hint, torch, trust, path, on_meta=True)
    _check_shapes(root, path, hint)
    root = root.to_empty(device="cpu")
    if any(isinstance(v, torch.Tensor) and v.is_meta for m in root.modules() for v in vars(m).values()):
        # a layer keeping a tensor outside its parameters and buffers: build it on the CPU
        return _build(meta, hint, torch, trust, path, on_meta=False)
    return root


def _check_shapes(module: Any, path: Path, hint: str) -> None:
    """Every tensor of ``module``'s state dict (a tied one under one of its names) must be
    stored in ``path`` with the same shape."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:
        raise SerializationError(f"cannot read {path.name}: {exc}") from exc
    groups: dict[int, list[tuple[str, Any]]] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append((name, tensor))
    for entries in groups.values():
        if not any(shapes.get(name) == list(t.shape) for name, t in entries):
            name, t = entries[0]
            stored = shapes.get(name)
            raise SerializationError(
                f"the module rebuilt from the manifest holds {name!r} of shape {list(t.shape)}, "
                f"stored {'as ' + str(stored) if stored is not None else 'nowhere'}; {hint}"
            )


def _freeze(module: Any, frozen: Any) -> None:
    """Turn off ``requires_grad`` of the rebuilt module's parameters the manifest lists as
    frozen (names it does not have are ignored: they change nothing)."""
    if not isinstance(frozen, list):
        return
    names = {n for n in frozen if isinstance(n, str)}
    for name, param in module.named_parameters(remove_duplicate=False):
        if name in names:
            param.requires_grad_(False)


def _match_dtypes(module: Any, path: Path) -> None:
    """Give a rebuilt module's floating parameters and buffers the dtypes stored in ``path``
    (a class builds float32; loading float64 weights into it would round them)."""
    import safetensors.torch as st
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    except Exception:
        return  # load_model reports the unreadable file
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        dtype = getattr(st, "_TYPES", {}).get(stored.get(name, ""))
        if (
            dtype is not None
            and tensor.dtype != dtype
            and tensor.is_floating_point()
            and dtype.is_floating_point
        ):
            tensor.data = tensor.data.to(dtype)
