"""Frameworks as users have them: torch containers registered without ``model=``,
transformers models (tied embeddings, save_pretrained directories, sharded ones) and
Fortran-order numpy arrays, through the registry (real git, throwaway repositories)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import cli, run_py
from uniflow._errors import SerializationError, UnsafeLoadError

# --------------------------------------------------------------------------- torch containers


class Scale(nn.Module):
    """A user class whose arguments are recorded (attributes of the same name)."""

    def __init__(self, factor: float = 1.0, dim: int = 4) -> None:
        super().__init__()
        self.factor = factor
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight * self.factor


class Wraps(nn.Module):
    """A user class that needs a module to be built: it cannot be rebuilt from data."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Hidden(nn.Module):
    """A user class that does not keep its argument: rebuilt with the default, it does not fit."""

    def __init__(self, width: int = 2) -> None:
        super().__init__()
        self.lin = nn.Linear(3, width)


class Stack(nn.Sequential):
    """A Sequential subclass with Sequential's own __init__ (rebuilt like a Sequential)."""


def _nested() -> nn.Sequential:
    torch.manual_seed(0)
    heads = nn.ModuleDict(
        {
            "left": nn.Sequential(nn.Linear(6, 3), nn.Tanh()),
            "right": nn.ModuleList([nn.Linear(6, 3, bias=False), nn.GELU(approximate="tanh")]),
        }
    )
    return nn.Sequential(
        OrderedDict(
            [
                ("embed", nn.Linear(4, 6)),
                ("norm", nn.LayerNorm(6, eps=1e-3)),
                ("scale", Scale(factor=0.5, dim=6)),
                ("stack", Stack(nn.Dropout(0.25), nn.ReLU())),
                ("heads", heads),
            ]
        )
    )


def _run_nested(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    h = seq.stack(seq.scale(seq.norm(seq.embed(x))))
    left = seq.heads["left"](h)
    right = h
    for layer in seq.heads["right"]:
        right = layer(right)
    return torch.cat([left, right], dim=-1)


def test_sequential_registered_without_model_comes_back(registry: Any) -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    registry.register(seq, "seq")
    loaded = registry.load("seq")
    assert type(loaded) is nn.Sequential
    assert repr(loaded) == repr(seq)
    x = torch.randn(5, 4)
    assert torch.equal(loaded(x), seq(x))
    assert loaded.training is False


def test_modulelist_and_moduledict_alone(registry: Any) -> None:
    ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 1)])
    md = nn.ModuleDict({"enc": nn.Linear(3, 2), "dec": nn.Linear(2, 3)})
    registry.register(ml, "ml")
    registry.register(md, "md")
    ml2, md2 = registry.load("ml"), registry.load("md")
    assert type(ml2) is nn.ModuleList and type(md2) is nn.ModuleDict
    assert list(md2.keys()) == ["enc", "dec"]
    for a, b in [(ml, ml2), (md, md2)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_nested_containers_with_user_class_and_dtypes(registry: Any) -> None:
    seq = _nested()
    seq.heads["left"].double()  # a float64 branch: rebuilt in float64, not rounded to float32
    seq.eval()
    registry.register(seq, "nested")
    loaded = registry.load("nested")
    assert repr(loaded) == repr(seq)
    assert type(loaded.stack) is Stack and type(loaded.scale) is Scale
    assert loaded.scale.factor == 0.5
    assert loaded.heads["left"][0].weight.dtype == torch.float64
    for (ka, va), (kb, vb) in zip(seq.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert ka == kb and va.dtype == vb.dtype and torch.equal(va, vb), ka
    seq.heads["left"].float()
    loaded.heads["left"].float()
    x = torch.randn(3, 4)
    assert torch.equal(_run_nested(loaded, x), _run_nested(seq, x))


def test_torch_layers_with_tuple_arguments(registry: Any) -> None:
    # JSON turns (2, 3) into [2, 3]; torch.nn layers are rebuilt with tuples again, so the
    # rebuilt layers are the registered ones (their extra_repr is checked)
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Conv2d(1, 2, (3, 3), padding=(1, 1)),
        nn.ZeroPad2d((1, 2, 0, 1)),
        nn.AdaptiveAvgPool2d((2, 3)),
        nn.Flatten(),
        nn.Unflatten(1, (2, 6)),
    ).eval()
    registry.register(seq, "tuples")
    loaded = registry.load("tuples")
    assert repr(loaded) == repr(seq)
    x = torch.randn(1, 1, 5, 5)
    assert torch.equal(loaded(x), seq(x))


def test_recurrent_layers_come_back(registry: Any) -> None:
    # nn.LSTM/GRU/RNN take (*args, **kwargs): their arguments are read as RNNBase names them
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True, proj_size=3).eval()
    layers = nn.ModuleList([nn.GRU(4, 6, dropout=0.0), nn.RNN(4, 2, nonlinearity="relu", bias=False)])
    registry.register(lstm, "lstm")
    registry.register(layers, "rnns")
    lstm2, layers2 = registry.load("lstm"), registry.load("rnns")
    assert repr(lstm2) == repr(lstm) and repr(layers2) == repr(layers)
    x = torch.randn(2, 3, 4)
    assert torch.equal(lstm2(x)[0], lstm(x)[0])
    for a, b in zip(layers, layers2, strict=True):
        assert torch.equal(a(x)[0], b(x)[0])


def test_fresh_process_rebuilds_torch_nn_but_imports_no_user_code(registry: Any, repo: Path) -> None:
    # another process (no test module imported): torch.nn containers come back; a child of
    # a class found only in this checkout is not imported without trust
    registry.register(nn.Sequential(nn.Linear(4, 3), nn.Tanh()), "plain")
    registry.register(_nested(), "nested")
    code = (
        "import torch\n"
        "from uniflow import ModelRegistry\n"
        "from uniflow._errors import UnsafeLoadError\n"
        "r = ModelRegistry('.')\n"
        "print(type(r.load('plain')).__name__, r.load('plain')[0].weight.shape)\n"
        "try:\n"
        "    r.load('nested')\n"
        "except UnsafeLoadError as e:\n"
        "    print('refused:', e)\n"
    )
    out = run_py(code, repo)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Sequential torch.Size([3, 4])"
    assert lines[1].startswith("refused: refusing to import submodule 'scale' tests.test_frameworks.Scale")
    assert "model=" in lines[1] and "trust=True" in lines[1]


def test_frozen_parameters_stay_frozen(registry: Any) -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Embedding.from_pretrained(torch.randn(5, 3), freeze=True), nn.Linear(3, 2))
    seq[1].bias.requires_grad_(False)
    registry.register(seq, "frozen")
    loaded = registry.load("frozen")
    grads = {n: p.requires_grad for n, p in loaded.named_parameters()}
    assert grads == {"0.weight": False, "1.weight": True, "1.bias": False}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile imports torch.jit
def test_wrapped_modules_are_registered_unwrapped(registry: Any) -> None:
    # torch.compile and DataParallel wrap a module (state-dict keys '_orig_mod.', 'module.'):
    # the module inside is what is registered, and a wrapped model= is loaded through
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    registry.register(torch.compile(seq), "compiled")
    registry.register(nn.DataParallel(seq), "parallel")
    x = torch.randn(2, 4)
    for name in ("compiled", "parallel"):
        loaded = registry.load(name)
        assert type(loaded) is nn.Sequential and torch.equal(loaded(x), seq(x))
        assert list(registry.load(name, tensors=["*"])) == ["0.bias", "0.weight"]
    fresh = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    wrapped = nn.DataParallel(fresh)
    assert registry.load("compiled", model=wrapped) is wrapped
    assert torch.equal(fresh[0].weight, seq[0].weight)


def test_container_with_unrebuildable_child_asks_for_model(registry: Any) -> None:
    seq = nn.Sequential(Wraps(nn.Linear(2, 2)), nn.ReLU())
    registry.register(seq, "wrapped")
    with pytest.raises(SerializationError, match=r"model=") as err:
        registry.load("wrapped")
    assert "\n" not in str(err.value) and "Wraps" in str(err.value)
    fresh = nn.Sequential(Wraps(nn.Linear(2, 2)), nn.ReLU())
    out = registry.load("wrapped", model=fresh)
    assert out is fresh
    assert torch.equal(fresh[0].inner.weight, seq[0].inner.weight)


def test_rebuilt_module_that_differs_from_the_recorded_one_is_refused(tmp_path: Path) -> None:
    # A manifest's recorded arguments that rebuild another configuration (same weights) are
    # refused: nothing is returned that behaves differently from what was registered.
    from uniflow.serializers._torch import TorchSerializer

    seq = nn.Sequential(nn.Linear(2, 2), nn.GELU(approximate="tanh"))
    ser = TorchSerializer()
    dest = tmp_path / "out"
    dest.mkdir()
    meta = json.loads(json.dumps(ser.save(seq, dest)))
    for spec in meta["submodules"]:
        if spec["class_qualname"] == "GELU":
            spec["init_kwargs"] = {"approximate": "none"}
    with pytest.raises(SerializationError, match=r"model="):
        ser.load(dest, meta)


def test_weights_that_do_not_fit_the_rebuilt_module_ask_for_model(registry: Any) -> None:
    registry.register(nn.Sequential(Hidden(width=5)), "hidden")
    with pytest.raises(SerializationError, match=r"do not fit the module rebuilt .*pass model=") as err:
        registry.load("hidden")
    assert "\n" not in str(err.value)
    fresh = nn.Sequential(Hidden(width=5))
    assert registry.load("hidden", model=fresh) is fresh


def test_unknown_args_are_not_guessed(registry: Any) -> None:
    wrapped = Wraps(nn.Linear(2, 2))
    registry.register(wrapped, "wraps")
    with pytest.raises(SerializationError, match=r"pass model=.*Wraps") as err:
        registry.load("wraps")
    assert "inner" in str(err.value)


# --------------------------------------------------------------------------- transformers


def _gpt2() -> Any:
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=128, n_positions=64)
    return tf.GPT2LMHeadModel(cfg).eval()


def _ids() -> torch.Tensor:
    return torch.tensor([[1, 5, 9, 3, 7, 2]])


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(_ids()).logits


def test_gpt2_tied_embeddings_into_fresh_instance(registry: Any) -> None:
    model = _gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    registry.register(model, "gpt2")
    fresh = type(model)(model.config).eval()
    torch.manual_seed(123)
    with torch.no_grad():
        fresh.transformer.wte.weight.normal_()  # not what was registered
    out = registry.load("gpt2", model=fresh)
    assert out is fresh
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    assert torch.equal(_logits(fresh), _logits(model))
    # the tied weight is stored once; a partial load finds it under either name
    part = registry.load("gpt2", tensors=["transformer.wte.weight", "lm_head.weight"])
    assert list(part) == ["lm_head.weight", "transformer.wte.weight"]
    assert all(torch.equal(t, model.lm_head.weight) for t in part.values())


def test_gpt2_without_model_needs_model_or_trust(registry: Any) -> None:
    model = _gpt2()
    registry.register(model, "gpt2")
    with pytest.raises(UnsafeLoadError) as err:
        registry.load("gpt2")
    msg = str(err.value)
    assert "\n" not in msg
    assert "model=" in msg and "save_pretrained" in msg and "GPT2LMHeadModel" in msg
    # trust=True: rebuilt from the recorded config, tie kept, same outputs
    loaded = registry.load("gpt2", trust=True)
    assert type(loaded) is type(model)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert loaded.training is False
    assert torch.equal(_logits(loaded), _logits(model))


def test_bert_tied_embeddings_into_fresh_instance(registry: Any) -> None:
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = tf.BertForMaskedLM(cfg).eval()
    decoder = model.cls.predictions.decoder
    assert decoder.weight is model.bert.embeddings.word_embeddings.weight
    registry.register(model, "bert")
    fresh = tf.BertForMaskedLM(cfg).eval()
    registry.load("bert", model=fresh)
    fresh_decoder = fresh.cls.predictions.decoder
    assert fresh_decoder.weight.data_ptr() == fresh.bert.embeddings.word_embeddings.weight.data_ptr()
    assert torch.equal(_logits(fresh), _logits(model))


def test_small_llama_into_fresh_instance(registry: Any) -> None:
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = tf.LlamaForCausalLM(cfg).eval()
    registry.register(model, "llama")
    fresh = tf.LlamaForCausalLM(cfg).eval()
    registry.load("llama", model=fresh)
    assert torch.equal(_logits(fresh), _logits(model))


def _tensors_of(registry: Any, name: str, version: str) -> dict[str, tuple[Any, ...] | None]:
    manifest = registry._repo.manifest(name, version)
    return {f.path: f.tensors for f in manifest.files}


def test_save_pretrained_sharded_directory(registry: Any, repo: Path, tmp_path: Path) -> None:
    tf = pytest.importorskip("transformers")
    model = _gpt2()
    d1 = tmp_path / "gpt2-v1"
    model.save_pretrained(d1, max_shard_size="200KB")
    shards = sorted(p.name for p in d1.glob("*.safetensors"))
    assert len(shards) > 1 and (d1 / "model.safetensors.index.json").is_file()
    registry.register(d1, "hf", version="1.0.0")

    path = registry.load("hf", "1.0.0")
    assert sorted(p.name for p in Path(path).glob("*.safetensors")) == shards
    again = tf.AutoModelForCausalLM.from_pretrained(path).eval()
    assert torch.equal(_logits(again), _logits(model))

    records = _tensors_of(registry, "hf", "1.0.0")
    for shard in shards:
        assert records[shard], f"no tensor records for {shard}"

    # change one layer, register v2: the diff names that tensor (and only it) as changed
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight.add_(1.0)
    d2 = tmp_path / "gpt2-v2"
    model.save_pretrained(d2, max_shard_size="200KB")
    registry.register(d2, "hf", version="1.1.0")
    diff = registry.diff("hf", "1.0.0", "1.1.0")
    changed = [t.name for f in diff.files for t in f.tensors or () if t.status == "changed"]
    assert changed == ["transformer.h.1.mlp.c_fc.weight"]
    part = registry.load("hf", "1.1.0", tensors=["transformer.h.1.mlp.c_fc.*"])
    assert list(part) == ["transformer.h.1.mlp.c_fc.bias", "transformer.h.1.mlp.c_fc.weight"]
    assert torch.equal(part["transformer.h.1.mlp.c_fc.weight"], model.transformer.h[1].mlp.c_fc.weight)
    shown = cli(repo, "models", "diff", "hf", "1.0.0", "1.1.0")
    assert "transformer.h.1.mlp.c_fc.weight" in shown.stdout


def test_save_pretrained_single_file_directory(registry: Any, tmp_path: Path) -> None:
    tf = pytest.importorskip("transformers")
    model = _gpt2()
    d = tmp_path / "gpt2"
    model.save_pretrained(d)
    version = registry.register(d, "hf1").version
    path = registry.load("hf1")
    again = tf.AutoModelForCausalLM.from_pretrained(path).eval()
    assert again.lm_head.weight is again.transformer.wte.weight
    assert torch.equal(_logits(again), _logits(model))
    assert _tensors_of(registry, "hf1", version)["model.safetensors"]


# --------------------------------------------------------------------------- Fortran-order numpy


@pytest.mark.parametrize("dtype", ["float32", "int16", "complex64"])
def test_fortran_array_round_trip_and_tensor_records(registry: Any, dtype: str) -> None:
    a = np.asfortranarray(np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(dtype))
    assert a.flags.f_contiguous and not a.flags.c_contiguous
    registry.register(a, "fort", version="1.0.0")
    back = registry.load("fort", "1.0.0")
    assert back.dtype == a.dtype and back.shape == a.shape
    assert back.flags.f_contiguous and not back.flags.c_contiguous
    assert np.array_equal(back, a)
    assert _tensors_of(registry, "fort", "1.0.0")["array.npy"]
    part = registry.load("fort", "1.0.0", tensors=["array"])["array"]
    assert part.shape == a.shape and np.array_equal(part, a)

    b = a.copy(order="F")
    b[1, 2, 3] += 1
    registry.register(b, "fort", version="1.1.0")
    diff = registry.diff("fort", "1.0.0", "1.1.0", stats=True)
    (delta,) = [t for f in diff.files for t in f.tensors or ()]
    assert delta.status == "changed"
    assert delta.stats is not None and delta.stats["max_abs_diff"] == 1.0


def test_c_order_array_stays_c_order(registry: Any) -> None:
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    registry.register(a, "corder")
    back = registry.load("corder")
    assert back.flags.c_contiguous and np.array_equal(back, a)


def test_big_endian_array_round_trip_and_tensor_records(registry: Any) -> None:
    a = np.asfortranarray(np.arange(12, dtype=">f4").reshape(3, 4))
    registry.register(a, "big", version="1.0.0")
    back = registry.load("big", "1.0.0")
    assert back.dtype == np.dtype(">f4") and back.flags.f_contiguous
    assert np.array_equal(back, a)
    assert _tensors_of(registry, "big", "1.0.0")["array.npy"]
    part = registry.load("big", "1.0.0", tensors=["array"])["array"]
    assert np.array_equal(part, a)
