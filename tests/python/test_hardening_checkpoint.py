"""Specifications of checkpoint loading from untrusted files: nothing is unpickled, a bad file is an
error naming it, a bad tensor an error naming the tensor, and a model is loaded whole or not at all."""
import json
import pickle
import random
import re
import struct
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file, save_file

import vlmzoo
from vlmzoo.models.checkpoint import read_safetensors_folder, read_torch_file
from vlmzoo.models.validate import check_state_dict, load_into
from vlmzoo.training.train import TRAINER_STATE, load_trainer_state


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlmzoo.build("llava-1.5-tiny")


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, before):
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def fresh_state(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}


# ---- load_into: all or nothing
def test_load_into_copies_every_tensor_and_converts_dtypes(model):
    state = fresh_state(model)
    state = {k: v.to(torch.bfloat16) if i % 2 else v for i, (k, v) in enumerate(state.items())}
    assert load_into(dict(model.named_parameters()), state) == ([], [])
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, state[k].float()), k


def test_non_finite_weights_are_named_and_nothing_is_loaded(model):
    before = snapshot(model)
    state = fresh_state(model)
    names = sorted(state)
    state[names[-1]].view(-1)[3] = float("nan")  # the last name: copying in order would have loaded all others
    state[names[5]].view(-1)[:2] = float("inf")
    with pytest.raises(ValueError, match="non-finite values \\(2\\)") as error:
        load_into(dict(model.named_parameters()), state)
    assert f"{names[-1]} (1 NaN, 0 inf of {state[names[-1]].numel()})" in str(error.value)
    assert f"{names[5]} (0 NaN, 2 inf" in str(error.value)
    assert unchanged(model, before)


def test_missing_and_unexpected_keys_are_a_key_error_listing_them(model):
    before = snapshot(model)
    state = fresh_state(model)
    gone = sorted(state)[-1]
    del state[gone]
    state["llm.mystery.weight"] = torch.ones(2)
    with pytest.raises(KeyError, match=f"missing keys \\(1\\): {gone}; unexpected keys \\(1\\): llm.mystery.weight"):
        load_into(dict(model.named_parameters()), state)
    assert unchanged(model, before)
    missing, unexpected = load_into(dict(model.named_parameters()), state, strict=False)
    assert (missing, unexpected) == ([gone], ["llm.mystery.weight"])
    assert torch.equal(model.state_dict()[gone], before[gone])


@pytest.mark.parametrize("problem, value, message", [
    ("shape", lambda p: torch.randn(p.numel() + 1), "checkpoint \\({n},\\) vs model"),
    ("dtype", lambda p: torch.ones(p.shape, dtype=torch.int64), "checkpoint dtype torch.int64 cannot hold"),
    ("bool", lambda p: torch.ones(p.shape, dtype=torch.bool), "checkpoint dtype torch.bool cannot hold"),
    ("complex", lambda p: torch.ones(p.shape, dtype=torch.complex64), "checkpoint dtype torch.complex64"),
    ("object", lambda p: p.tolist(), "a list, not a tensor"),
    ("meta", lambda p: torch.empty(p.shape, device="meta"), "a meta tensor without values"),
])
def test_bad_tensors_are_named_and_nothing_is_loaded(model, problem, value, message):
    before = snapshot(model)
    state = fresh_state(model)
    name = sorted(state)[-1]
    state[name] = value(before[name])
    with pytest.raises(ValueError, match=f"{name}: " + message.format(n=before[name].numel() + 1)):
        load_into(dict(model.named_parameters()), state)
    assert unchanged(model, before)


def corrupt(state, rng):
    """One random way a stranger's checkpoint can be wrong; returns its kind."""
    name = rng.choice(sorted(k for k, v in state.items() if isinstance(v, torch.Tensor) and v.dim() > 0))
    t = state[name]
    kind = rng.choice(["nan", "inf", "shape", "int", "missing", "extra", "not-a-tensor", "scalar"])
    if kind in ("nan", "inf"):
        t.view(-1)[rng.randrange(t.numel())] = float(kind) * rng.choice([1, -1]) if t.is_floating_point() else 0
    elif kind == "shape":
        dims = list(t.shape)
        dims[rng.randrange(len(dims))] += rng.choice([-1, 1, 7])
        state[name] = torch.randn([max(0, d) for d in dims])
    elif kind == "int":
        state[name] = t.to(rng.choice([torch.int8, torch.int32, torch.int64, torch.uint8]))
    elif kind == "missing":
        del state[name]
    elif kind == "extra":
        state[name + rng.choice(["_", ".x", "s"])] = torch.randn(3)
    elif kind == "not-a-tensor":
        state[name] = rng.choice([None, 1.0, "w", t.numpy()])
    else:
        state[name] = torch.tensor(1.0)
    return kind


def test_randomly_corrupted_state_dicts_never_half_load():
    """200 state dicts, each with 1-3 random corruptions: every one is refused, the model untouched."""
    torch.manual_seed(0)
    model = vlmzoo.build("llava-1.5-tiny", vision={"hidden": 32, "heads": 2, "mlp": 64, "layers": 2},
                         llm={"vocab": 64, "hidden": 32, "heads": 2, "kv_heads": 1, "mlp": 64, "layers": 2})
    before = snapshot(model)
    rng = random.Random(11)
    tried, outcomes = Counter(), Counter()
    for trial in range(200):
        state = fresh_state(model, seed=trial)
        kinds = [corrupt(state, rng) for _ in range(rng.randint(1, 3))]
        tried.update(kinds)
        with pytest.raises((ValueError, KeyError)) as error:
            load_into(dict(model.named_parameters()), state)
        outcomes[error.type.__name__] += 1
        assert unchanged(model, before), kinds
    print(f"\nbad state dicts: 200 ({dict(tried)}) -> {dict(outcomes)}")
    assert sum(outcomes.values()) == 200


# ---- files: a bad file is named, nothing is unpickled
def save_tiny_checkpoint(model, folder):
    model.save_pretrained(str(folder))
    return folder / "model.safetensors"


@pytest.mark.parametrize("damage", ["truncated", "header cut", "empty", "length too big", "garbage header", "bad offsets"])
def test_corrupt_safetensors_name_the_file(model, tmp_path, damage):
    path = save_tiny_checkpoint(model, tmp_path)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][1] += 4
    data = {
        "truncated": raw[: len(raw) // 2],
        "header cut": raw[: 8 + n // 2],
        "empty": b"",
        "length too big": struct.pack("<Q", 1 << 40) + raw[8:],
        "garbage header": struct.pack("<Q", n) + b"{" * n + raw[8 + n :],
        "bad offsets": struct.pack("<Q", n + 1) + json.dumps(header).encode().ljust(n + 1) + raw[8 + n :],
    }[damage]
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"{path}: not a valid safetensors file"):
        vlmzoo.from_pretrained(tmp_path)


def test_a_vlmzoo_checkpoint_with_nan_weights_is_refused_by_tensor_name(model, tmp_path):
    path = save_tiny_checkpoint(model, tmp_path)
    tensors = load_file(path)
    tensors["llm.lm_head.weight" if "llm.lm_head.weight" in tensors else sorted(tensors)[0]].view(-1)[7] = float("nan")
    bad = "llm.lm_head.weight" if "llm.lm_head.weight" in tensors else sorted(tensors)[0]
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=f"non-finite values \\(1\\): {bad} \\(1 NaN"):
        vlmzoo.from_pretrained(tmp_path)


def test_a_broken_config_json_is_named(model, tmp_path):
    save_tiny_checkpoint(model, tmp_path)
    (tmp_path / "vlmzoo_config.json").write_text('{"family": "llava", ')
    with pytest.raises(ValueError, match="vlmzoo_config.json: not valid JSON"):
        vlmzoo.from_pretrained(tmp_path)
    (tmp_path / "vlmzoo_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="vlmzoo_config.json: holds a JSON list, expected an object"):
        vlmzoo.from_pretrained(tmp_path)


class Payload:
    """Unpickling this would run code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_in_a_bin_checkpoint_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "evil": Payload(str(marker))}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin: refused, .* never unpickles"):
        read_safetensors_folder(tmp_path)
    assert not marker.exists()
    # A raw pickle stream (the oldest .bin layout) is refused the same way.
    (tmp_path / "raw.pth").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(ValueError, match="raw.pth: "):
        read_torch_file(tmp_path / "raw.pth")
    assert not marker.exists()


def test_pickled_code_in_a_trainer_state_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "losses": [], "learning_rates": [], "optimizer": Payload(str(marker))}, tmp_path / TRAINER_STATE)
    with pytest.raises(ValueError, match=f"{TRAINER_STATE}: refused"):
        load_trainer_state(tmp_path)
    assert not marker.exists()


def test_a_bin_checkpoint_must_be_a_flat_dict_of_tensors(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "nested.bin")
    with pytest.raises(ValueError, match="nested.bin: expected a flat dict .*'state_dict'"):
        read_torch_file(tmp_path / "nested.bin")
    (tmp_path / "torn.bin").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(ValueError, match="torn.bin: not a readable torch checkpoint"):
        read_torch_file(tmp_path / "torn.bin")


def write_sharded(folder, shards, weight_map):
    for name, tensors in shards.items():
        save_file(tensors, str(folder / name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_a_sharded_index_must_name_existing_files_inside_the_folder(tmp_path):
    a, b = {"x": torch.ones(2)}, {"y": torch.zeros(3)}
    write_sharded(tmp_path, {"a.safetensors": a, "b.safetensors": b}, {"x": "a.safetensors", "y": "b.safetensors"})
    assert sorted(read_safetensors_folder(tmp_path)) == ["x", "y"]
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"x": "a.safetensors", "y": "c.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="shard 'c.safetensors' does not exist"):
        read_safetensors_folder(tmp_path)
    index.write_text(json.dumps({"weight_map": {"x": "../a.safetensors"}}))
    with pytest.raises(ValueError, match="shard '../a.safetensors' is not a file name in the checkpoint folder"):
        read_safetensors_folder(tmp_path)
    index.write_text(json.dumps({"weight_map": {"x": "a.safetensors", "z": "a.safetensors"}}))
    with pytest.raises(ValueError, match="1 tensors are not in the shards it names: z"):
        read_safetensors_folder(tmp_path)
    index.write_text(json.dumps({"weights": {}}))
    with pytest.raises(ValueError, match="weight_map must be an object"):
        read_safetensors_folder(tmp_path)


def test_one_tensor_in_two_files_is_an_error_naming_both(tmp_path):
    save_file({"x": torch.ones(2)}, str(tmp_path / "a.safetensors"))
    save_file({"x": torch.zeros(2)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="tensor 'x' is in both .*a.safetensors and .*b.safetensors"):
        read_safetensors_folder(tmp_path)


def test_check_state_dict_reports_without_touching_anything(model):
    params = dict(model.named_parameters())
    state = fresh_state(model, seed=1234)
    assert check_state_dict(params, state) == ([], [])
    assert not any(torch.equal(params[k], state[k]) for k in state)


def make_hf(model_type, folder):
    """A tiny random Hugging Face checkpoint of each model type vlmzoo converts (saved by transformers)."""
    from blip2_fixtures import make_hf_blip2, make_hf_opt
    from fuyu_fixtures import make_hf_fuyu
    from flamingo_fixtures import make_hf_idefics
    from hf_fixtures import make_hf_llava
    from test_dual_encoder_parity import make_hf_clip, make_hf_siglip
    from test_llama_text_only import make_hf_llama

    {"llava": lambda: make_hf_llava(folder, seed=3), "blip-2": lambda: make_hf_blip2(folder),
     "instructblip": lambda: make_hf_blip2(folder, text="llama", instruct=True), "opt": lambda: make_hf_opt(folder),
     "llama": lambda: make_hf_llama(folder),
     "clip": lambda: make_hf_clip(folder), "siglip": lambda: make_hf_siglip(folder),
     "fuyu": lambda: make_hf_fuyu(folder),
     "idefics": lambda: make_hf_idefics(folder)}[model_type]()


def test_every_hugging_face_converter_is_covered_below():
    from vlmzoo.families.registry import HF_CONVERTERS

    assert sorted(HF_CONVERTERS) == sorted(HF_MODEL_TYPES)


HF_MODEL_TYPES = ["llava", "blip-2", "instructblip", "opt", "llama", "clip", "siglip", "fuyu", "idefics"]


@pytest.mark.parametrize("model_type", HF_MODEL_TYPES)
def test_a_hugging_face_checkpoint_with_non_finite_weights_is_refused_by_its_tensor_names(tmp_path, model_type):
    pytest.importorskip("transformers")
    make_hf(model_type, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == model_type
    vlmzoo.from_pretrained(tmp_path)  # loads as saved
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    floats = sorted(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 4)
    nan_name, inf_name = floats[len(floats) // 3], floats[-1]  # a weight deep inside, and the last one
    tensors[nan_name].view(-1)[1] = float("nan")
    tensors[inf_name].view(-1)[:2] = -float("inf")
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="non-finite values \\(2\\)") as error:
        vlmzoo.from_pretrained(tmp_path)
    assert f"{nan_name} (1 NaN, 0 inf of {tensors[nan_name].numel()})" in str(error.value)
    assert f"{inf_name} (0 NaN, 2 inf of {tensors[inf_name].numel()})" in str(error.value)
    assert str(tmp_path) in str(error.value)


@pytest.mark.parametrize("name", vlmzoo.presets("tiny"))
def test_a_vlmzoo_checkpoint_of_every_family_with_non_finite_weights_is_refused(tmp_path, name):
    torch.manual_seed(0)
    vlmzoo.build(name).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    bad = sorted(tensors)[len(tensors) // 2]
    tensors[bad].view(-1)[0] = float("inf")
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=f"non-finite values \\(1\\): {re.escape(bad)} \\(0 NaN, 1 inf"):
        vlmzoo.from_pretrained(tmp_path)


def test_values_beyond_a_narrower_model_dtype_are_refused_not_turned_into_inf():
    model = vlmzoo.build("llava-1.5-tiny", dtype=torch.float16)
    before = snapshot(model)
    state = {k: v.float() for k, v in before.items()}
    name = sorted(state)[3]
    state[name].view(-1)[0] = 1e6  # float16 tops out at 65504
    with pytest.raises(ValueError, match=f"overflow the model's dtype: they hold non-finite values \\(1\\): {name}"):
        model.load_state_dict(state)
    assert unchanged(model, before)
