"""Round trip to transformers: a vlmzoo LLaVA written with convert.export_hf loads in transformers'
LlavaForConditionalGeneration with no missing or unexpected weights and gives the same logits."""
from __future__ import annotations

import json

import pytest
import torch

import vlmzoo
from hf_fixtures import IMAGE_TOKEN, VOCAB, llava_batch
from vlmzoo.families.export import NotExportable, save_for_transformers

transformers = pytest.importorskip("transformers")

TINY = {
    "name": "tiny-export",
    "family": "llava",
    "vision": {"kind": "vit", "style": "clip", "image_size": 32, "patch_size": 8, "hidden": 32, "layers": 3,
               "heads": 4, "mlp": 64, "feature_layers": -2, "select": "default"},
    "abstractor": {"kind": "mlp", "depth": 2, "act": "gelu"},
    "fusion": {"kind": "splice", "image_token_id": IMAGE_TOKEN},
    "llm": {"kind": "llama", "vocab": VOCAB, "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "mlp": 96,
            "max_positions": 256, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
}
VARIANTS = {
    "clip": {},
    "clip-full-last-layer": {"vision": {"select": "full", "feature_layers": -1}},
    "clip-two-layers": {"vision": {"feature_layers": [-3, -2]}},
    "siglip": {"vision": {"kind": "vit", "style": "siglip", "image_size": 32, "patch_size": 8, "hidden": 32,
                          "layers": 3, "heads": 4, "mlp": 64, "feature_layers": -2, "select": "full"}},
    "tied-embeddings": {"llm": {"tie_embeddings": True}},
    "projector-without-bias": {"abstractor": {"bias": False}},
}


def random_model(variant: str, seed: int = 0):
    torch.manual_seed(seed)
    model = vlmzoo.build(TINY, **VARIANTS[variant])
    with torch.no_grad():  # the constructor leaves norms at 1/0 and biases at 0: move every weight
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_loads_the_export_with_the_same_logits(variant, tmp_path):
    model = random_model(variant)
    save_for_transformers(model, tmp_path)
    reference, info = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    input_ids, mask, pixels = llava_batch(tokens_per_image=model.visual_tokens_per_image)
    with torch.no_grad():
        expected = reference.eval()(input_ids=input_ids, pixel_values=pixels, attention_mask=mask).logits
        actual = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask).logits
    assert expected.abs().max() > 0.1
    assert (actual - expected)[mask.bool()].abs().max().item() <= 1e-5


@pytest.mark.parametrize("variant", ["clip", "siglip", "tied-embeddings"])
def test_the_export_reads_back_into_the_same_model(variant, tmp_path):
    model = random_model(variant, seed=1)
    save_for_transformers(model, tmp_path)
    loaded = vlmzoo.from_pretrained(tmp_path)
    assert loaded.config["vision"] == model.config["vision"] and loaded.config["llm"] == model.config["llm"]
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_the_config_names_the_visual_tokens_and_dtype(tmp_path):
    model = random_model("clip").to(torch.bfloat16)
    save_for_transformers(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["image_seq_length"] == 16 and config["dtype"] == "bfloat16"
    assert config["text_config"]["rope_parameters"]["rope_theta"] == model.config["llm"]["rope_theta"]


@pytest.mark.parametrize("override, field", [
    ({"abstractor": {"kind": "linear"}}, "abstractor"),
    ({"vision": {"class_token": False}}, "vision.class_token"),
])
def test_what_transformers_cannot_express_is_refused_by_name(override, field, tmp_path):
    model = vlmzoo.build(TINY, **override)
    with pytest.raises(NotExportable, match=field):
        save_for_transformers(model, tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_a_model_of_a_built_in_task_exports_with_a_processor_transformers_reads(tmp_path):
    # The tiny preset speaking the shapes vocabulary, exported with its word tokenizer: transformers'
    # own AutoProcessor + LlavaForConditionalGeneration give vlmzoo's inputs and greedy tokens.
    from sklearn.datasets import load_sample_image
    from PIL import Image

    from vlmzoo.data import make_task
    from vlmzoo.families import AutoProcessor
    from vlmzoo.training.train import task_overrides

    tokenizer = make_task("shapes", n_train=0, n_val=0, n_test=0).tokenizer
    torch.manual_seed(0)
    model = vlmzoo.build("llava-1.5-tiny", **task_overrides(vlmzoo.resolve_config("llava-1.5-tiny"), tokenizer)).eval()
    save_for_transformers(model, tmp_path, processor=tokenizer)
    ours = AutoProcessor.from_pretrained("llava-1.5-tiny")
    theirs = transformers.AutoProcessor.from_pretrained(tmp_path)
    assert type(theirs).__name__ == "LlavaProcessor"
    image = Image.fromarray(load_sample_image("flower.jpg"))
    text = "<image> how many shapes are left of the red circle ?"
    expected = theirs(images=image, text=text, return_tensors="pt")
    actual = ours(images=image, text=text, return_tensors="pt")
    assert torch.equal(actual.input_ids, expected["input_ids"])
    assert (actual.pixel_values - expected["pixel_values"]).abs().max() <= 1e-6
    reference = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    new = reference.generate(**expected, max_new_tokens=6, do_sample=False, eos_token_id=None,
                             pad_token_id=tokenizer.pad_id)
    mine = model.generate(input_ids=actual.input_ids, pixel_values=actual.pixel_values,
                          attention_mask=actual.attention_mask, max_new_tokens=6, eos_token_id=[])
    assert torch.equal(new, mine)
    # Ids past the vocabulary (the head is rounded up) read as <unk> in vlmzoo's decode; transformers' tokenizer
    # drops them, so they are given to it as <unk>.
    generated = new[0, expected["input_ids"].shape[1]:]
    as_unk = torch.where(generated >= len(tokenizer), tokenizer.unk_id, generated)
    assert theirs.decode(as_unk, skip_special_tokens=False) == ours.decode(mine[0, actual.input_ids.shape[1]:],
                                                                           skip_special_tokens=False)
