"""``uniflow get URL NAME --layout triton --model-repository DIR``: the model file and a
``config.pbtxt`` Triton accepts (parsed with Triton's message schema), ``onnxruntime`` giving
the registered outputs from the written model, stable version numbers, refusals of models
Triton cannot serve, and a model repository treated as hostile (symlinks, forged maps)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import cli, open_registry, shared_setup
from tests.serving.tritonproto import DATA_TYPES, parse_config
from uniflow import ModelRegistry, UniflowError
from uniflow.serving.triton import VERSION_MAP, deploy_triton

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

X = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, 2.0, -1.0]], dtype=np.float32)


def _onnx_model(seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """``y = x @ W + B`` as an ONNX graph (MatMul + Add), a dynamic batch dimension."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, w, b


def _run(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], {"x": X})[0])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bare repository with ``mm`` (ONNX, v1.0.0 in production, v1.1.0), ``arr`` (numpy)
    and ``est`` (a scikit-learn estimator), pushed with their chunks; its file:// URL. Read
    only (by URL) by the tests that share it."""
    from sklearn.linear_model import LogisticRegression

    tmp_path = tmp_path_factory.mktemp("served")
    bare, a = shared_setup(tmp_path, blob_url=str(tmp_path / "srv" / "blobs"))
    reg = open_registry(a)
    m1, w1, b1 = _onnx_model(1)
    m2, w2, b2 = _onnx_model(2)
    reg.register(model=m1, name="mm", version="v1.0.0")
    reg.register(model=m2, name="mm", version="v1.1.0")
    reg.promote("mm", "v1.0.0", "production")
    reg.register(model=np.arange(6, dtype=np.float32), name="arr", version="v1.0.0")
    est = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    reg.register(model=est, name="est", version="v1.0.0")
    reg.push()
    reg.close()
    return {"url": bare.as_uri(), "clone": a, "w1": w1, "b1": b1, "w2": w2, "b2": b2}


def _get(cwd: Path, url: str, *args: str, code: int = 0) -> Any:
    r = cli(cwd, "get", url, *args, code=code)
    return json.loads(r.stdout) if "--json" in args and code == 0 else r


def test_the_written_model_gives_the_registered_outputs(tmp_path: Path, served: dict[str, Any]) -> None:
    repo = tmp_path / "models"
    report = _get(
        tmp_path, served["url"], "mm", "--stage", "production", "--layout", "triton",
        "--model-repository", str(repo), "--json",
    )  # fmt: skip
    assert (report["version"], report["number"], report["platform"]) == ("v1.0.0", 1, "onnxruntime_onnx")
    written = repo / "mm" / "1" / "model.onnx"
    assert sorted(p.name for p in (repo / "mm").iterdir() if not p.name.startswith(".")) == [
        "1", "config.pbtxt", VERSION_MAP,
    ]  # fmt: skip
    with ModelRegistry(served["url"]) as registry:
        registered = registry.load("mm", stage="production")  # the verified registered model.onnx
        assert written.read_bytes() == Path(registered).read_bytes()
        expected = _run(Path(registered))
    out = _run(written)
    assert np.array_equal(out, expected)
    assert np.allclose(out, X @ served["w1"] + served["b1"], atol=1e-5)

    config = parse_config((repo / "mm" / "config.pbtxt").read_text())
    assert (config.name, config.platform, config.max_batch_size) == ("mm", "onnxruntime_onnx", 0)
    assert list(config.version_policy.specific.versions) == [1]
    (inp,), (outp,) = config.input, config.output
    assert (inp.name, DATA_TYPES[inp.data_type], list(inp.dims)) == ("x", "TYPE_FP32", [-1, 4])
    assert (outp.name, DATA_TYPES[outp.data_type], list(outp.dims)) == ("y", "TYPE_FP32", [-1, 3])


def test_each_version_keeps_its_number(tmp_path: Path, served: dict[str, Any]) -> None:
    repo = tmp_path / "models"
    (repo / "mm" / "7").mkdir(parents=True)  # a version another tool put there: never reused
    (repo / "mm" / "7" / "model.onnx").write_bytes(b"theirs")
    args = ("--layout", "triton", "--model-repository", str(repo), "--json")
    first = _get(tmp_path, served["url"], "mm", "v1.0.0", *args)
    second = _get(tmp_path, served["url"], "mm", "v1.1.0", *args)
    assert (first["number"], second["number"]) == (8, 9)
    assert np.allclose(_run(repo / "mm" / "9" / "model.onnx"), X @ served["w2"] + served["b2"], atol=1e-5)
    # going back to v1.0.0 (a rollback) serves its number again; 9 stays on disk
    again = _get(tmp_path, served["url"], "mm", "v1.0.0", *args)
    assert (again["number"], again["unchanged"]) == (8, True)
    config = parse_config((repo / "mm" / "config.pbtxt").read_text())
    assert list(config.version_policy.specific.versions) == [8]
    assert (repo / "mm" / "9" / "model.onnx").is_file()
    assert (repo / "mm" / "7" / "model.onnx").read_bytes() == b"theirs"
    doc = json.loads((repo / "mm" / VERSION_MAP).read_text())
    assert doc == {"format": 1, "model": "mm", "versions": {"v1.0.0": 8, "v1.1.0": 9}}
    # a damaged version directory is written again, whole
    (repo / "mm" / "8" / "model.onnx").write_bytes(b"damaged")
    (repo / "mm" / "8" / "extra").write_bytes(b"x")
    fixed = _get(tmp_path, served["url"], "mm", "v1.0.0", *args)
    assert (fixed["number"], fixed["unchanged"]) == (8, False)
    assert sorted(os.listdir(repo / "mm" / "8")) == ["model.onnx"]
    assert np.allclose(_run(repo / "mm" / "8" / "model.onnx"), X @ served["w1"] + served["b1"], atol=1e-5)


@pytest.mark.parametrize(("name", "what"), [("arr", "numpy: array.npy"), ("est", "sklearn")])
def test_a_model_triton_cannot_serve_is_one_line(
    tmp_path: Path, served: dict[str, Any], name: str, what: str
) -> None:
    repo = tmp_path / "models"
    r = _get(tmp_path, served["url"], name, "--layout", "triton", "--model-repository", str(repo), code=2)
    assert r.stderr.count("\n") == 1 and f"Triton cannot serve {name} v1.0.0 ({what}" in r.stderr
    assert "ONNX model (one .onnx file) or a TorchScript archive" in r.stderr
    assert not repo.exists()  # refused before anything is written


def test_layout_options_are_checked(tmp_path: Path, served: dict[str, Any]) -> None:
    r = _get(tmp_path, served["url"], "mm", "--layout", "triton", code=2)
    assert "--layout triton needs --model-repository DIR" in r.stderr
    r = _get(tmp_path, served["url"], "mm", "--model-repository", str(tmp_path / "m"), code=2)
    assert "--model-repository goes with --layout triton" in r.stderr
    assert not (tmp_path / "m").exists()


def test_symlinks_in_the_model_repository_are_never_followed(tmp_path: Path, served: dict[str, Any]) -> None:
    repo, outside = tmp_path / "models", tmp_path / "outside"
    outside.mkdir()
    repo.mkdir()
    (repo / "mm").symlink_to(outside)
    with ModelRegistry(served["url"]) as registry:
        with pytest.raises(UniflowError, match="mm is a symlink, not a directory; move it away"):
            deploy_triton(registry, "mm", repo, stage="production")
        assert os.listdir(outside) == []
        (repo / "mm").unlink()
        (repo / "mm").mkdir()
        # the map says v1.0.0 is 1, and 1 is a symlink out: the entry is replaced, not followed
        (repo / "mm" / VERSION_MAP).write_text(
            json.dumps({"format": 1, "model": "mm", "versions": {"v1.0.0": 1}})
        )
        (repo / "mm" / "1").symlink_to(outside)
        # the config is a symlink to a file elsewhere: replaced as an entry, its target untouched
        (outside / "victim").write_bytes(b"keep")
        (repo / "mm" / "config.pbtxt").symlink_to(outside / "victim")
        d = deploy_triton(registry, "mm", repo, stage="production")
    assert d.number == 1 and not d.unchanged
    assert not (repo / "mm" / "1").is_symlink() and (repo / "mm" / "1" / "model.onnx").is_file()
    assert not (repo / "mm" / "config.pbtxt").is_symlink()
    assert sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_bytes() == b"keep"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "expected {'format': 1"),
        (json.dumps({"format": 2, "model": "mm", "versions": {}}).encode(), "expected {'format': 1"),
        (json.dumps({"format": 1, "model": "other", "versions": {}}).encode(), "the map of model 'other'"),
        (
            json.dumps({"format": 1, "model": "mm", "versions": {"../x": 1}}).encode(),
            "'../x' is not a version",
        ),
        (json.dumps({"format": 1, "model": "mm", "versions": {"v1.0.0": True}}).encode(), "whole number"),
        (json.dumps({"format": 1, "model": "mm", "versions": {"v1.0.0": 0}}).encode(), "whole number"),
        (json.dumps({"format": 1, "model": "mm", "versions": {"v1.0.0": 2**63}}).encode(), "whole number"),
        (
            json.dumps({"format": 1, "model": "mm", "versions": {"v1.0.0": 1, "v2.0.0": 1}}).encode(),
            "same number",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b" " * (2 << 20), "larger than"),
    ],
)
def test_a_forged_version_map_is_refused(
    tmp_path: Path, served: dict[str, Any], content: bytes, why: str
) -> None:
    repo = tmp_path / "models"
    (repo / "mm").mkdir(parents=True)
    (repo / "mm" / VERSION_MAP).write_bytes(content)
    with ModelRegistry(served["url"]) as registry, pytest.raises(UniflowError) as err:
        deploy_triton(registry, "mm", repo, stage="production")
    assert why in str(err.value) and "move it away" in str(err.value) and "\n" not in str(err.value)
    assert sorted(os.listdir(repo / "mm")) == [".uniflow-lock", VERSION_MAP]  # nothing else written


def test_a_version_map_that_is_a_symlink_or_fifo_is_refused(tmp_path: Path, served: dict[str, Any]) -> None:
    repo = tmp_path / "models"
    (repo / "mm").mkdir(parents=True)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"format": 1, "model": "mm", "versions": {}}))
    (repo / "mm" / VERSION_MAP).symlink_to(target)
    with ModelRegistry(served["url"]) as registry:
        with pytest.raises(UniflowError, match="move it away"):
            deploy_triton(registry, "mm", repo, stage="production")
        (repo / "mm" / VERSION_MAP).unlink()
        os.mkfifo(repo / "mm" / VERSION_MAP)  # never waited on
        with pytest.raises(UniflowError, match="is a FIFO, not a file"):
            deploy_triton(registry, "mm", repo, stage="production")


@pytest.mark.slow  # a crash at a named point
def test_a_killed_deploy_leaves_no_partial_version(tmp_path: Path, served: dict[str, Any]) -> None:
    repo = tmp_path / "models"
    args = ("mm", "v1.1.0", "--layout", "triton", "--model-repository", str(repo))
    r = cli(tmp_path, "get", served["url"], *args, code=None, env={"UNIFLOW_TEST_KILL_AT": "triton-staged"})
    assert r.returncode == -9
    assert not (repo / "mm" / "1").exists() and not (repo / "mm" / "config.pbtxt").exists()
    assert any(p.name.startswith(".uniflow-tmp-") for p in (repo / "mm").iterdir())
    done = _get(tmp_path, served["url"], *args, "--json")
    assert done["number"] == 1  # the number recorded before the kill
    assert not any(p.name.startswith(".uniflow-tmp-") for p in (repo / "mm").iterdir())
    assert np.allclose(_run(repo / "mm" / "1" / "model.onnx"), X @ served["w2"] + served["b2"], atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_with_its_tensors_recorded_at_register(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    bare, a = shared_setup(tmp_path, blob_url=str(tmp_path / "srv" / "blobs"))
    module = torch.jit.script(torch.nn.Linear(4, 2))
    scripted, state = tmp_path / "model.pt", tmp_path / "weights.pt"
    torch.jit.save(module, str(scripted))
    torch.save(module.state_dict(), str(state))  # a zip archive too, but not TorchScript
    spec = {
        "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [-1, 4]}],
        "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [-1, 2]}],
    }
    reg = open_registry(a)
    reg.register(model=str(scripted), name="ts", version="v1.0.0", params={"triton": spec})
    reg.register(model=str(scripted), name="bare-ts", version="v1.0.0")
    reg.register(model=str(state), name="sd", version="v1.0.0")
    reg.push()
    reg.close()
    repo = tmp_path / "models"
    with ModelRegistry(bare.as_uri()) as registry:
        d = deploy_triton(registry, "ts", repo)
        assert (d.platform, d.number) == ("pytorch_libtorch", 1)
        assert (repo / "ts" / "1" / "model.pt").read_bytes() == scripted.read_bytes()
        config = parse_config((repo / "ts" / "config.pbtxt").read_text())
        assert config.platform == "pytorch_libtorch"
        assert [(t.name, list(t.dims)) for t in config.input] == [("INPUT__0", [-1, 4])]
        with pytest.raises(UniflowError, match="record them at register, params=") as err:
            deploy_triton(registry, "bare-ts", repo)
        assert "\n" not in str(err.value)
        with pytest.raises(UniflowError, match="Triton cannot serve sd v1.0.0"):
            deploy_triton(registry, "sd", repo)
    loaded = torch.jit.load(str(repo / "ts" / "1" / "model.pt"))
    x = torch.ones(3, 4)
    assert torch.equal(loaded(x), module(x))


def test_an_onnx_directory_with_external_data(tmp_path: Path) -> None:
    """A registered directory holding ``clf.onnx`` and its weights in a separate file: the
    model is written as ``model.onnx`` and the weights beside it, where it references them."""
    from onnx import TensorProto, helper

    model, w, b = _onnx_model(3)
    # older exporters list the initializers among the graph's inputs too
    model.graph.input.extend(
        [helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3]),
         helper.make_tensor_value_info("B", TensorProto.FLOAT, [3])]
    )  # fmt: skip
    src = tmp_path / "exported"
    src.mkdir()
    onnx.save_model(model, str(src / "clf.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)  # fmt: skip
    (src / "README.md").write_text("exported with torch.onnx\n")
    bare, a = shared_setup(tmp_path, blob_url=str(tmp_path / "srv" / "blobs"))
    reg = open_registry(a)
    reg.register(model=str(src), name="ext", version="v2.0.0")
    reg.register(model=str(src / "clf.onnx"), name="one-file", version="v1.0.0")
    reg.push()
    reg.close()
    repo = tmp_path / "models"
    with ModelRegistry(bare.as_uri()) as registry:
        d = deploy_triton(registry, "ext", repo)
    assert sorted(os.listdir(d.version_dir)) == ["README.md", "model.onnx", "weights.bin"]
    assert (d.version_dir / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    assert np.allclose(_run(d.version_dir / "model.onnx"), X @ w + b, atol=1e-5)
    config = parse_config(d.config.read_text())
    assert [t.name for t in config.input] == ["x"]  # the initializers W and B are not Triton inputs
    # a single registered .onnx file (its weights elsewhere, not registered) is laid out too
    with ModelRegistry(bare.as_uri()) as registry:
        one = deploy_triton(registry, "one-file", repo)
    assert sorted(os.listdir(one.version_dir)) == ["model.onnx"]
