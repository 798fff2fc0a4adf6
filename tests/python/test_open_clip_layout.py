"""A CLIP saved by open-clip-torch loads as a whole model and as a slot source. open-clip-torch imports
torchvision, which has no wheel beside our CPU torch, so the test writes a folder in its layout itself:
the state-dict names and shapes its model.py / transformer.py define (visual.conv1 [W, 3, P, P] without bias,
packed attn.in_proj_weight [3W, W], proj and text_projection as [W, E] matrices, a scalar logit_scale, the
text tower at the top level, a non-persistent attn_mask some exports carry) and open_clip_config.json, from
a tiny random transformers CLIPModel, whose logits the loaded model must then give."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vlmzoo

transformers = pytest.importorskip("transformers")

VOCAB, CONTEXT, EMBED = 99, 16, 24
WIDTH, LAYERS, HEADS = 32, 2, 2  # head width 16: open_clip's heads = width // head_width


def blocks(prefix: str, hf_prefix: str, state: dict, layers: int) -> dict[str, torch.Tensor]:
    out = {}
    for i in range(layers):
        hf, ours = f"{hf_prefix}encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[ours + f"attn.in_proj_{kind}"] = torch.cat([state[hf + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[ours + f"attn.out_proj.{kind}"] = state[hf + f"self_attn.out_proj.{kind}"]
            out[ours + f"ln_1.{kind}"] = state[hf + f"layer_norm1.{kind}"]
            out[ours + f"ln_2.{kind}"] = state[hf + f"layer_norm2.{kind}"]
            out[ours + f"mlp.c_fc.{kind}"] = state[hf + f"mlp.fc1.{kind}"]
            out[ours + f"mlp.c_proj.{kind}"] = state[hf + f"mlp.fc2.{kind}"]
    return out


def open_clip_state_dict(model) -> dict[str, torch.Tensor]:
    s = {k: v.detach().clone() for k, v in model.state_dict().items()}
    v, t = "vision_model.", "text_model."
    out = {
        "visual.conv1.weight": s[v + "embeddings.patch_embedding.weight"],
        "visual.class_embedding": s[v + "embeddings.class_embedding"],
        "visual.positional_embedding": s[v + "embeddings.position_embedding.weight"],
        "visual.proj": s["visual_projection.weight"].t(),
        "token_embedding.weight": s[t + "embeddings.token_embedding.weight"],
        "positional_embedding": s[t + "embeddings.position_embedding.weight"],
        "text_projection": s["text_projection.weight"].t(),
        "logit_scale": s["logit_scale"].reshape(()),
        "attn_mask": torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1),
        **blocks("visual.", v, s, LAYERS), **blocks("", t, s, LAYERS),
    }
    for kind in ("weight", "bias"):
        out[f"visual.ln_pre.{kind}"] = s[v + f"pre_layrnorm.{kind}"]
        out[f"visual.ln_post.{kind}"] = s[v + f"post_layernorm.{kind}"]
        out[f"ln_final.{kind}"] = s[t + f"final_layer_norm.{kind}"]
    assert out["visual.conv1.weight"].shape == (WIDTH, 3, 8, 8) and out["visual.proj"].shape == (WIDTH, EMBED)
    return {k: x.contiguous() for k, x in out.items()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.manual_seed(0)
    tower = dict(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                 hidden_act="quick_gelu")
    config = transformers.CLIPConfig(
        text_config=dict(tower, vocab_size=VOCAB, max_position_embeddings=CONTEXT, eos_token_id=VOCAB - 1,
                         bos_token_id=VOCAB - 2, pad_token_id=0),
        vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=EMBED)
    reference = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # norms start at 1/0: perturb them so every weight is seen
        for name, p in reference.named_parameters():
            if "norm" in name or "logit" in name:
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("open_clip")
    save_file(open_clip_state_dict(reference), str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": EMBED, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": LAYERS, "width": WIDTH, "patch_size": 8, "head_width": WIDTH // HEADS},
        "text_cfg": {"context_length": CONTEXT, "vocab_size": VOCAB, "width": WIDTH, "heads": HEADS, "layers": LAYERS},
    }, "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}))
    return reference, folder


def texts_ending_in_eot(seed: int = 1):
    """Rows of ids below the end-of-text token, each ending in it (open_clip pools at the largest id), then padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB - 2, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    for row, length in enumerate((9, 6, 4)):
        ids[row, length - 1] = VOCAB - 1
        ids[row, length:] = 0
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("fused", [True, False])
def test_an_open_clip_folder_loads_as_a_clip_with_the_reference_logits(folders, fused):
    reference, folder = folders
    model = vlmzoo.from_pretrained(folder)
    assert model.config["family"] == "clip" and model.config["vision"]["act"] == "quick_gelu"
    model.fused = fused
    ids, mask = texts_ending_in_eot()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        actual = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    for field in ("logits_per_image", "image_embeds", "text_embeds"):
        assert (getattr(actual, field) - getattr(expected, field)).abs().max().item() <= 1e-4, field


def test_an_open_clip_folder_lends_its_image_tower_to_a_llava(folders):
    _, folder = folders
    whole = vlmzoo.from_pretrained(folder)
    llava = vlmzoo.build("llava-1.5-tiny", vision={"from": str(folder)})
    assert llava.config["vision"]["from"] == str(folder) and llava.config["vision"]["hidden"] == WIDTH
    own = dict(whole.named_parameters("vision"))
    assert all(torch.equal(p, own[k]) for k, p in llava.named_parameters("vision"))


def test_an_open_clip_folder_with_a_timm_tower_is_refused_naming_the_file(tmp_path):
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": 8, "vision_cfg": {"timm_model_name": "vit_base_patch16_siglip_224"}, "text_cfg": {}}}))
    with pytest.raises(ValueError, match=r"open_clip_config\.json: timm image towers"):
        vlmzoo.from_pretrained(tmp_path)
