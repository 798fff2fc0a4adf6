"""Configs: defaults, round-trips, presets, and errors that name the JSON path of the problem."""
from __future__ import annotations

import json

import pytest

import vlmzoo

TINY = "llava-1.5-tiny"


def with_change(slot: str | None, key: str, value):
    cfg = vlmzoo.load_config(TINY)
    (cfg if slot is None else cfg.setdefault(slot, {}))[key] = value
    return cfg


MALFORMED = [
    # (slot, key, value, message fragment)
    ("llm", "heads", 7, r"llm\.heads: 7 does not divide llm\.hidden 256"),
    ("llm", "kv_heads", 3, r"llm\.kv_heads: 3 does not divide llm\.heads 8"),
    ("llm", "hidden", -4, r"llm\.hidden: -4 must be a positive integer"),
    ("llm", "vocab", "big", r"llm\.vocab: \"big\" is not an integer"),
    ("llm", "hiden", 64, r"llm\.hiden: unknown key \(did you mean \"llm\.hidden\"\?\)"),
    ("llm", "head_dim", 31, r"llm\.head_dim: 31 must be even"),
    ("llm", "rms_eps", 0, r"llm\.rms_eps: must be > 0"),
    ("llm", "eos_token_id", 512, r"llm\.eos_token_id: 512 is outside the vocabulary \[0, 512\)"),
    # the registered kinds grow as families land: the message lists them all and suggests the closest
    ("llm", "kind", "lama", r"llm\.kind: \"lama\" is not one of the registered llm kinds .*\"llama\".*\(did you mean \"llama\"\?\)"),
    ("vision", "patch_size", 65, r"vision\.patch_size: 65 is larger than vision\.image_size 64"),
    ("vision", "heads", 5, r"vision\.heads: 5 does not divide vision\.hidden 128"),
    ("vision", "feature_layers", -5, r"vision\.feature_layers: -5 is out of range"),
    ("vision", "feature_layers", [1, "x"], r"vision\.feature_layers: .* not an integer"),
    ("vision", "select", "cls", r"vision\.select: \"cls\" is not one of"),
    ("vision", "act", "gelu_fast", r"vision\.act: \"gelu_fast\" is not one of"),
    ("vision", "class_token", "yes", r"vision\.class_token: \"yes\" is not true or false"),
    ("abstractor", "kind", "q_former", r"abstractor\.kind: \"q_former\" is not one of"),
    ("abstractor", "depth", 0, r"abstractor\.depth: 0 must be >= 1"),
    ("fusion", "image_token_id", 600, r"fusion\.image_token_id: 600 is outside the vocabulary"),
    (None, "family", "llava2", r"family: \"llava2\" is not one of .*\"llava\""),
    (None, "visoin", {}, r"visoin: unknown key \(did you mean \"vision\"\?\)"),
    (None, "llm", [1, 2], r"llm: expected an object, got array"),
]


@pytest.mark.parametrize("slot,key,value,message", MALFORMED, ids=[f"{s}.{k}" for s, k, _, _ in MALFORMED])
def test_malformed_config_raises_value_error_naming_the_field(slot, key, value, message):
    with pytest.raises(ValueError, match=message):
        vlmzoo.build(with_change(slot, key, value))


def test_invalid_json_text_is_a_value_error():
    with pytest.raises(ValueError, match="not valid JSON"):
        vlmzoo._C.resolve_config("{llm: ")


def test_resolved_config_round_trips_and_fills_every_default():
    resolved = vlmzoo.resolve_config(TINY)
    assert resolved["llm"]["head_dim"] == 256 // 8
    assert resolved["llm"]["rope_theta"] == 10000.0
    assert resolved["vision"]["act"] == "quick_gelu"
    assert vlmzoo.resolve_config(resolved) == resolved
    assert vlmzoo.build(TINY).config == resolved


def test_family_defaults_are_llava_1_5_7b_shapes():
    resolved = vlmzoo.resolve_config({"family": "llava"})
    assert resolved["vision"]["image_size"] == 336 and resolved["vision"]["patch_size"] == 14
    assert resolved["llm"]["hidden"] == 4096 and resolved["fusion"]["image_token_id"] == 32000


def test_siglip_style_changes_its_defaults_but_explicit_fields_win():
    resolved = vlmzoo.resolve_config(TINY, vision={"style": "siglip", "act": "gelu"})
    assert resolved["vision"]["class_token"] is False
    assert resolved["vision"]["act"] == "gelu"


def test_kv_heads_default_to_heads_when_only_heads_given():
    cfg = vlmzoo.load_config(TINY)
    del cfg["llm"]["kv_heads"]
    assert vlmzoo.resolve_config(cfg)["llm"]["kv_heads"] == cfg["llm"]["heads"]


def test_presets_include_every_group_and_load_from_json_path(tmp_path):
    names = vlmzoo.presets()
    for expected in ("llava-1.5-tiny", "llava-1.5-small", "llava-1.5-7b", "llava-1.5-13b"):
        assert expected in names
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(vlmzoo.load_config(TINY)))
    assert vlmzoo.build(str(path)).config == vlmzoo.build(TINY).config


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="unknown preset 'llava-9' ; presets are|unknown preset 'llava-9'"):
        vlmzoo.build("llava-9")
