"""Serializers: round trips, safe-by-default loading, detection and lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from torch import nn

import uniflow.serializers as sers
from uniflow._errors import IntegrityError, SerializationError, UnsafeLoadError, UsageError
from uniflow.serializers import canonical_framework, get_serializer, serializer_for
from uniflow.serializers._base import Serializer
from uniflow.serializers._files import FilesSerializer, OnnxSerializer, framework_for_path
from uniflow.serializers._numpy import NumpySerializer
from uniflow.serializers._pickle import PickleSerializer
from uniflow.serializers._sklearn import SklearnSerializer
from uniflow.serializers._torch import TorchSerializer

# --------------------------------------------------------------------------- fixtures


class Net(nn.Module):
    def __init__(self, dim: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = hidden
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class ConfigNet(nn.Module):
    """Its constructor argument is not stored as an attribute; get_config tells how to rebuild."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = nn.Linear(width, width)

    def get_config(self) -> dict[str, Any]:
        return {"width": self.layer.in_features}


class TiedNet(nn.Module):
    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.vocab = vocab
        self.dim = dim
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


class NeedsEncoder(nn.Module):
    """Cannot be rebuilt from meta: ``encoder`` is a module, not a JSON value."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(4, 2)


class CustomEstimator(BaseEstimator):
    """A sklearn-API estimator skops does not trust by default."""

    def __init__(self, scale: float = 2.0) -> None:
        self.scale = scale

    def fit(self, X: Any, y: Any = None) -> CustomEstimator:
        self.offset_ = float(np.mean(X))
        return self

    def predict(self, X: Any) -> Any:
        return np.asarray(X) * self.scale + self.offset_


class Evil:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


def _out(tmp_path: Path, name: str = "out") -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    """Meta must survive JSON; return what a manifest would give back."""
    result: dict[str, Any] = json.loads(json.dumps(meta, allow_nan=False))
    return result


# --------------------------------------------------------------------------- torch


def test_torch_module_round_trip_rebuilds_class_with_init_args(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Net(dim=5, hidden=7).eval()
    ser = TorchSerializer()
    d = _out(tmp_path)
    meta = _jsonable(ser.save(net, d))
    assert [p.name for p in d.iterdir()] == ["model.safetensors"]
    assert meta["kind"] == "module"
    assert meta["class_qualname"] == "Net"
    assert meta["init_kwargs"] == {"dim": 5, "hidden": 7}
    assert meta["training"] is False

    loaded = ser.load(d, meta)
    assert type(loaded).__qualname__ == "Net"
    assert (loaded.dim, loaded.hidden) == (5, 7)
    assert loaded.training is False
    x = torch.randn(3, 5)
    assert torch.equal(loaded(x), net(x))


def test_torch_module_keeps_training_flag(tmp_path: Path) -> None:
    net = Net().train()
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(net, d))
    assert TorchSerializer().load(d, meta).training is True


def test_torch_module_uses_get_config(tmp_path: Path) -> None:
    net = ConfigNet(width=3)
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(net, d))
    assert meta["init_source"] == "get_config"
    loaded = TorchSerializer().load(d, meta)
    assert loaded.layer.in_features == 3
    assert torch.equal(loaded.layer.weight, net.layer.weight)


def test_torch_state_dict_round_trip(tmp_path: Path) -> None:
    sd = Net().state_dict()
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(sd, d))
    assert meta["kind"] == "state_dict"
    loaded = TorchSerializer().load(d, meta)
    assert set(loaded) == set(sd)
    for k in sd:
        assert torch.equal(loaded[k], sd[k])


def test_torch_state_dict_with_shared_and_overlapping_tensors(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd = {"a": base, "a_again": base, "transposed": base.t(), "row": base[1]}
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(sd, d))
    assert meta["aliases"] == {"a_again": "a"}
    loaded = TorchSerializer().load(d, meta)
    for k in sd:
        assert torch.equal(loaded[k], sd[k]), k
    assert loaded["a_again"] is loaded["a"]


def test_torch_tensor_round_trip(tmp_path: Path) -> None:
    t = torch.randn(4, 3, dtype=torch.float64).t()  # non-contiguous
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(t, d))
    assert meta["kind"] == "tensor"
    loaded = TorchSerializer().load(d, meta)
    assert loaded.dtype == torch.float64
    assert torch.equal(loaded, t)


def test_torch_tied_weights_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = TiedNet()
    with torch.no_grad():
        net.embed.weight.add_(1.0)
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(net, d))
    loaded = TorchSerializer().load(d, meta)
    assert loaded.head.weight is loaded.embed.weight
    assert torch.equal(loaded.embed.weight, net.embed.weight)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(ids), net(ids))

    # the tied module's state_dict holds the same tensor under two names
    d2 = _out(tmp_path, "sd")
    sd = net.state_dict()
    meta2 = _jsonable(TorchSerializer().save(sd, d2))
    loaded_sd = TorchSerializer().load(d2, meta2)
    assert torch.equal(loaded_sd["head.weight"], sd["head.weight"])
    assert torch.equal(loaded_sd["embed.weight"], sd["embed.weight"])


def test_torch_unrebuildable_class_requires_model_option(tmp_path: Path) -> None:
    net = NeedsEncoder(nn.Linear(4, 4))
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(net, d))
    assert meta["missing_init_args"] == ["encoder"]
    with pytest.raises(SerializationError, match=r"model="):
        TorchSerializer().load(d, meta)

    target = NeedsEncoder(nn.Linear(4, 4))
    out = TorchSerializer().load(d, meta, into=target)
    assert out is target
    assert torch.equal(target.head.weight, net.head.weight)
    assert torch.equal(target.encoder.weight, net.encoder.weight)


def test_torch_local_class_requires_model_option(tmp_path: Path) -> None:
    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(Local(), d))
    with pytest.raises(SerializationError, match=r"model="):
        TorchSerializer().load(d, meta)


def test_torch_meta_naming_a_non_module_is_refused(tmp_path: Path) -> None:
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(Net(), d))
    marker = tmp_path / "ran"
    meta.update(class_module="subprocess", class_qualname="run", init_kwargs={"args": ["touch", str(marker)]})
    with pytest.raises(SerializationError, match="not a torch.nn.Module"):
        TorchSerializer().load(d, meta)
    assert not marker.exists()


def test_torch_into_with_wrong_shape_fails(tmp_path: Path) -> None:
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(Net(dim=8), d))
    with pytest.raises(SerializationError, match="do not fit"):
        TorchSerializer().load(d, meta, into=Net(dim=3))


def test_torch_never_uses_torch_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(Net(), d))

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", boom)
    assert isinstance(TorchSerializer().load(d, meta), Net)


def test_torch_container_with_a_module_registered_twice(tmp_path: Path) -> None:
    shared = nn.Linear(3, 3)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(seq, d))
    assert meta["init_source"] == "container"
    assert {"name": "2", "same_as": "0"} in meta["submodules"]
    loaded = TorchSerializer().load(d, meta)
    assert loaded[0] is loaded[2]
    x = torch.randn(2, 3)
    assert torch.equal(loaded(x), seq(x))


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"name": "", "class_module": "torch.nn", "class_qualname": "ReLU"}, "invalid submodule entry"),
        ({"name": "x.y", "class_module": "torch.nn", "class_qualname": "ReLU"}, "no container 'x'"),
        ({"name": "0.1", "same_as": "0"}, "repeats '0'"),  # a module inside itself
        ({"name": "9", "same_as": "nowhere"}, "repeats 'nowhere'"),
        ({"name": "0.0", "class_module": "torch.nn", "class_qualname": "ReLU"}, "invalid submodule entry"),
        (
            {"name": "9", "class_module": "torch.nn", "class_qualname": "Linear", "init_source": "container"},
            "not a torch container",
        ),
        (["not", "a", "dict"], "invalid submodule entry"),
    ],
)
def test_torch_hostile_submodule_entries_are_refused(tmp_path: Path, entry: Any, why: str) -> None:
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(nn.Sequential(nn.Sequential(nn.ReLU())), d))
    meta["submodules"].append(entry)
    with pytest.raises(SerializationError, match=why):
        TorchSerializer().load(d, meta)


def test_torch_container_from_an_older_manifest_asks_for_model(tmp_path: Path) -> None:
    # uniflow 0.1 recorded a Sequential like any class (no submodules): rebuilt empty, its
    # weights do not fit, and the error says how to load it
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(nn.Sequential(nn.Linear(2, 2)), d))
    del meta["submodules"], meta["extra_repr"]
    meta["init_source"] = "signature"
    with pytest.raises(
        SerializationError, match=r"do not fit the module rebuilt .*; pass model=<an instance"
    ):
        TorchSerializer().load(d, meta)
    target = nn.Sequential(nn.Linear(2, 2))
    assert TorchSerializer().load(d, meta, into=target) is target


def test_torch_layer_shapes_are_checked_before_memory_is_given(tmp_path: Path) -> None:
    # a manifest naming a bigger layer than the weights stored: refused from its shapes on
    # the meta device, before anything of that size is allocated or initialised
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(nn.Sequential(nn.Linear(2, 2)), d))
    big = {"in_features": 4096, "out_features": 4096, "bias": True}
    big_repr = nn.Linear(4096, 4096, device="meta").extra_repr()
    meta["submodules"][0].update(init_kwargs=big, extra_repr=big_repr)
    why = r"holds '0.weight' of shape \[4096, 4096\], stored as \[2, 2\]"
    with pytest.raises(SerializationError, match=why):
        TorchSerializer().load(d, meta)


def test_torch_submodules_of_a_non_container_are_refused(tmp_path: Path) -> None:
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(Net(), d))
    meta["submodules"] = [{"name": "extra", "class_module": "torch.nn", "class_qualname": "ReLU"}]
    with pytest.raises(SerializationError, match="no container"):
        TorchSerializer().load(d, meta)


def test_torch_missing_init_args_never_call_the_class(tmp_path: Path) -> None:
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(Net(), d))
    meta["missing_init_args"] = ["secret"]  # Net() would work: it is still not guessed
    with pytest.raises(SerializationError, match=r"secret were not recorded; pass model="):
        TorchSerializer().load(d, meta)


def test_torch_transformers_config_needs_trust_before_any_import(tmp_path: Path) -> None:
    d = _out(tmp_path)
    meta = _jsonable(TorchSerializer().save(Net(), d))
    meta.update(
        class_module="uniflow_no_such_package.models",
        init_source="transformers_config",
        transformers_config={},
    )
    with pytest.raises(UnsafeLoadError, match=r"trust=True.*model=.*save_pretrained"):
        TorchSerializer().load(d, meta)
    assert "uniflow_no_such_package" not in sys.modules


# --------------------------------------------------------------------------- sklearn


def _xy() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return X, y


def test_sklearn_round_trip(tmp_path: Path) -> None:
    X, y = _xy()
    model = LogisticRegression().fit(X, y)
    d = _out(tmp_path)
    ser = SklearnSerializer()
    assert ser.can_save(model)
    meta = _jsonable(ser.save(model, d))
    assert (d / "model.skops").is_file()
    loaded = ser.load(d, meta)
    assert isinstance(loaded, LogisticRegression)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_sklearn_untrusted_type_needs_trust(tmp_path: Path) -> None:
    X, _ = _xy()
    model = CustomEstimator(scale=3.0).fit(X)
    ser = SklearnSerializer()
    assert ser.can_save(model)  # a BaseEstimator subclass outside sklearn
    d = _out(tmp_path)
    meta = _jsonable(ser.save(model, d))
    with pytest.raises(UnsafeLoadError, match=r"CustomEstimator.*trust=True"):
        ser.load(d, meta)
    loaded = ser.load(d, meta, trust=True)
    np.testing.assert_allclose(loaded.predict(X), model.predict(X))


def test_sklearn_detection_ignores_other_objects() -> None:
    ser = SklearnSerializer()
    assert not ser.can_save(LogisticRegression)  # the class, not an estimator
    assert not ser.can_save({"fit": 1})
    assert not ser.can_save(np.zeros(3))


# --------------------------------------------------------------------------- numpy


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.linspace(0, 1, 7, dtype=np.float16),
        np.array([("a", 1.5)], dtype=[("name", "U3"), ("x", "f8")]),
        np.array(3.25),
    ],
)
def test_numpy_round_trip(tmp_path: Path, arr: Any) -> None:
    d = _out(tmp_path)
    ser = NumpySerializer()
    assert ser.can_save(arr)
    meta = _jsonable(ser.save(arr, d))
    assert meta["shape"] == list(arr.shape)
    loaded = ser.load(d, meta)
    assert loaded.dtype == arr.dtype
    np.testing.assert_array_equal(loaded, arr)


def test_numpy_fortran_array_is_stored_c_order_and_comes_back_fortran(tmp_path: Path) -> None:
    arr = np.asfortranarray(np.arange(24, dtype=np.float64).reshape(2, 3, 4))
    d = _out(tmp_path)
    meta = _jsonable(NumpySerializer().save(arr, d))
    assert meta["order"] == "F"
    stored = np.load(d / "array.npy")
    assert stored.flags.c_contiguous and np.array_equal(stored, arr)  # a plain C-order file
    loaded = NumpySerializer().load(d, meta)
    assert loaded.flags.f_contiguous and not loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, arr)


def test_numpy_big_endian_array_is_stored_little_endian_and_comes_back_big(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    d = _out(tmp_path)
    meta = _jsonable(NumpySerializer().save(arr, d))
    assert meta["byteorder"] == ">" and "order" not in meta
    assert np.load(d / "array.npy").dtype == np.dtype("<i4")
    loaded = NumpySerializer().load(d, meta)
    assert loaded.dtype == np.dtype(">i4") and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, arr)


def test_numpy_order_recorded_only_for_fortran_arrays(tmp_path: Path) -> None:
    for i, arr in enumerate([np.zeros((1, 5)), np.zeros(5), np.zeros((4, 6))[:, ::2], np.zeros((2, 2))]):
        meta = NumpySerializer().save(np.asfortranarray(arr) if i == 0 else arr, _out(tmp_path, str(i)))
        assert "order" not in meta and "byteorder" not in meta, arr.shape


def test_numpy_object_array_refused(tmp_path: Path) -> None:
    arr = np.array([{"a": 1}, None], dtype=object)
    assert not NumpySerializer().can_save(arr)
    with pytest.raises(SerializationError, match="trust=True"):
        NumpySerializer().save(arr, _out(tmp_path))
    with pytest.raises(SerializationError, match="trust=True"):
        serializer_for(arr, None, False)
    assert serializer_for(arr, None, True).name == "pickle"


def test_numpy_load_refuses_pickled_npy(tmp_path: Path) -> None:
    d = _out(tmp_path)
    np.save(d / "array.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(SerializationError):
        NumpySerializer().load(d, {"file": "array.npy"})


# --------------------------------------------------------------------------- pickle


def test_pickle_refused_without_trust_at_save(tmp_path: Path) -> None:
    d = _out(tmp_path)
    with pytest.raises(SerializationError, match="trust=True"):
        PickleSerializer().save({"a": 1}, d)
    assert list(d.iterdir()) == []


def test_pickle_round_trip_with_trust_and_refused_at_load(tmp_path: Path) -> None:
    d = _out(tmp_path)
    meta = _jsonable(PickleSerializer().save({"a": [1, 2]}, d, trust=True))
    with pytest.raises(UnsafeLoadError, match=r"model\.pkl is a pickle; pass trust=True"):
        PickleSerializer().load(d, meta)
    assert PickleSerializer().load(d, meta, trust=True) == {"a": [1, 2]}


def test_malicious_pickle_does_not_run_without_trust(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    d = _out(tmp_path)
    meta = _jsonable(PickleSerializer().save(Evil(marker), d, trust=True))
    assert not marker.exists()
    with pytest.raises(UnsafeLoadError):
        PickleSerializer().load(d, meta)
    assert not marker.exists()

    handle = PickleSerializer().load(d, meta, trust=True)
    handle.close()
    assert marker.exists()


# --------------------------------------------------------------------------- files / onnx


def test_files_serializer_returns_paths(tmp_path: Path) -> None:
    d = _out(tmp_path)
    (d / "weights.gguf").write_bytes(b"GGUF")
    ser = FilesSerializer()
    assert ser.load(d, {}) == d
    assert ser.load(d, {"kind": "file", "path": "weights.gguf"}) == d / "weights.gguf"
    with pytest.raises(SerializationError):
        ser.load(d, {"kind": "file", "path": "absent.bin"})
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(IntegrityError):
            ser.load(d, {"kind": "file", "path": bad})
    with pytest.raises(SerializationError):
        ser.save(d, _out(tmp_path, "dest"))
    assert not ser.can_save(d)


def test_framework_for_path(tmp_path: Path) -> None:
    cases = {
        "a.safetensors": "safetensors",
        "m.ONNX": "onnx",
        "w.pt": "pytorch",
        "w.pth": "pytorch",
        "w.bin": "pytorch",
        "m.skops": "sklearn",
        "m.pkl": "pickle-file",
        "m.pickle": "pickle-file",
        "m.joblib": "pickle-file",
        "a.npy": "numpy",
        "a.npz": "numpy",
        "m.gguf": "gguf",
        "notes.txt": "files",
        "noext": "files",
    }
    for name, expected in cases.items():
        assert framework_for_path(tmp_path / name) == expected, name
    (tmp_path / "dir.onnx").mkdir()
    assert framework_for_path(tmp_path / "dir.onnx") == "files"
    assert sers.framework_for_path(tmp_path / "x.gguf") == "gguf"


class _FakeModelProto:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 (protobuf API)
        return self.data


def test_onnx_detected_only_when_onnx_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proto = _FakeModelProto(b"\x08\x07onnx-bytes")
    ser = OnnxSerializer()
    monkeypatch.delitem(sys.modules, "onnx", raising=False)
    assert not ser.can_save(proto)
    monkeypatch.setitem(sys.modules, "onnx", SimpleNamespace(ModelProto=_FakeModelProto))
    assert ser.can_save(proto)
    assert serializer_for(proto, None, False).name == "onnx"
    d = _out(tmp_path)
    meta = _jsonable(ser.save(proto, d))
    path = ser.load(d, meta)
    assert path == d / "model.onnx"
    assert path.read_bytes() == proto.data


# --------------------------------------------------------------------------- choosing


def test_serializer_for_detects_each_kind() -> None:
    assert serializer_for(Net(), None, False).name == "torch"
    assert serializer_for(Net().state_dict(), None, False).name == "torch"
    assert serializer_for(torch.zeros(2), None, False).name == "torch"
    assert serializer_for(LogisticRegression(), None, False).name == "sklearn"
    assert serializer_for(np.zeros(2), None, False).name == "numpy"


def test_serializer_for_framework_labels() -> None:
    for label in ("pytorch", "PyTorch", "torch", "pt"):
        assert serializer_for(Net(), label, False).name == "torch"
    for label in ("sklearn", "scikit-learn", "xgboost"):
        assert serializer_for(LogisticRegression(), label, False).name == "sklearn"
    assert serializer_for(np.zeros(2), "np", False).name == "numpy"
    with pytest.raises(SerializationError):
        serializer_for({}, "pytorch", False)  # an empty dict is not a state dict
    assert serializer_for(np.zeros(2), "jax", False).name == "numpy"  # unknown label: detect
    assert serializer_for(np.zeros(2), "pickle", True).name == "pickle"
    with pytest.raises(SerializationError, match="cannot save"):
        serializer_for(np.zeros(2), "pytorch", False)


def test_serializer_for_unknown_object() -> None:
    with pytest.raises(SerializationError, match=r"supported:.*trust=True"):
        serializer_for({"a": 1}, None, False)
    assert serializer_for({"a": 1}, None, True).name == "pickle"
    assert serializer_for(Net(), None, True).name == "torch"  # trust does not prefer pickle


def test_canonical_framework() -> None:
    assert canonical_framework("PyTorch") == "pytorch"
    assert canonical_framework("torch") == "pytorch"
    assert canonical_framework(" pt ") == "pytorch"
    assert canonical_framework("scikit-learn") == "sklearn"
    assert canonical_framework("np") == "numpy"
    assert canonical_framework("xgboost") == "xgboost"
    for bad in ("", "has space", "a/b"):
        with pytest.raises(UsageError):
            canonical_framework(bad)


def test_get_serializer_by_name() -> None:
    for name, cls in [
        ("torch", TorchSerializer),
        ("sklearn", SklearnSerializer),
        ("numpy", NumpySerializer),
        ("pickle", PickleSerializer),
        ("files", FilesSerializer),
        ("onnx", OnnxSerializer),
    ]:
        ser = get_serializer(name)
        assert isinstance(ser, cls)
        assert ser.name == name
        assert get_serializer(name) is ser
    with pytest.raises(SerializationError, match="unknown serializer 'nope'"):
        get_serializer("nope")


class ToySerializer(Serializer):
    name = "toy"
    framework = "toyframework"
    aliases = ("toy",)
    priority = 100

    def can_save(self, obj: Any) -> bool:
        return isinstance(obj, frozenset)

    def save(self, obj: Any, dest: Path, *, trust: bool = False) -> dict[str, Any]:
        (dest / "items.json").write_text(json.dumps(sorted(obj)))
        return {}

    def load(self, src: Path, meta: dict[str, Any], *, trust: bool = False, into: Any = None) -> Any:
        return frozenset(json.loads((src / "items.json").read_text()))


@pytest.fixture
def plugin_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def fake_entry_points(group: str) -> list[Any]:
        assert group == "uniflow.serializers"
        return [
            SimpleNamespace(name="toy", value="somepkg:ToySerializer", load=lambda: ToySerializer),
            SimpleNamespace(name="broken", value="somepkg:Broken", load=lambda: 1 / 0),
            SimpleNamespace(name="notone", value="somepkg:NotOne", load=lambda: dict),
        ]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(sers, "_instances", {})
    monkeypatch.setattr(sers, "_plugins_loaded", False)


@pytest.mark.usefixtures("plugin_registry")
def test_entry_point_plugins(tmp_path: Path) -> None:
    ser = get_serializer("toy")
    assert isinstance(ser, ToySerializer)
    assert serializer_for(frozenset({1}), None, False) is ser
    assert serializer_for(frozenset({1}), "toyframework", False) is ser
    d = _out(tmp_path)
    assert ser.load(d, ser.save(frozenset({2, 3}), d)) == frozenset({2, 3})
    with pytest.raises(SerializationError, match="unknown serializer"):
        get_serializer("broken")


def test_real_entry_points_point_at_builtins() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="uniflow.serializers"):
        if ep.value.startswith("uniflow.serializers."):
            assert get_serializer(ep.name).name == ep.name
            assert isinstance(get_serializer(ep.name), ep.load())


# --------------------------------------------------------------------------- lazy imports


def test_import_does_not_pull_heavy_libraries() -> None:
    code = (
        "import sys, uniflow.serializers as s\n"
        "heavy = ('torch', 'sklearn', 'numpy', 'skops', 'safetensors')\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "for n in ('torch', 'sklearn', 'numpy', 'pickle', 'files', 'onnx'): s.get_serializer(n)\n"
        "assert s.serializer_for({'a': 1}, None, True).name == 'pickle'\n"
        "assert s.serializer_for({'a': 1}, 'pickle', True).name == 'pickle'\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
