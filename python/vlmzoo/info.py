"""Parameter counts and FLOPs computed from a config alone, so the 7B and 13B presets can be
described without allocating them. Tests check the counts against built models."""
from __future__ import annotations

from typing import Any, Mapping

from .presets import resolve_config


def visual_tokens_per_image(config: Mapping[str, Any]) -> int:
    v = config["vision"]
    if v["kind"] == "none":
        return 0
    tokens = (v["image_size"] // v["patch_size"]) ** 2 + (1 if v["class_token"] else 0)
    # "default" drops the first token: the class token (transformers drops it even without one).
    return tokens - (1 if v["select"] == "default" else 0)


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _vision_params(v: Mapping[str, Any]) -> int:
    if v["kind"] == "none":
        return 0
    d, m = v["hidden"], v["mlp"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    tokens = patches + (1 if v["class_token"] else 0)
    n = v["channels"] * v["patch_size"] ** 2 * d + (d if v["patch_bias"] else 0)
    n += d if v["class_token"] else 0
    n += tokens * d
    n += 2 * d if v["pre_norm"] else 0
    per_layer = 4 * _linear(d, d, True) + 2 * 2 * d + _linear(d, m, True) + _linear(m, d, True)
    n += v["layers"] * per_layer
    n += 2 * d if v["post_norm"] else 0
    return n


def _feature_dim(v: Mapping[str, Any]) -> int:
    layers = v["feature_layers"]
    return v["hidden"] * (len(layers) if isinstance(layers, list) else 1)


def _abstractor_params(config: Mapping[str, Any]) -> int:
    a, hidden = config["abstractor"], config["llm"]["hidden"]
    if a["kind"] == "identity":
        return 0
    n_in = _feature_dim(config["vision"])
    return _linear(n_in, hidden, a["bias"]) + (a.get("depth", 1) - 1) * _linear(hidden, hidden, a["bias"])


def _llm_layer_matmul_params(l: Mapping[str, Any]) -> int:
    h, hd = l["hidden"], l["head_dim"]
    attn = h * l["heads"] * hd * 2 + h * l["kv_heads"] * hd * 2
    return attn + 3 * h * l["mlp"]


def _llm_params(l: Mapping[str, Any]) -> int:
    h, hd = l["hidden"], l["head_dim"]
    per_layer = _llm_layer_matmul_params(l) + 2 * h
    if l["attention_bias"]:
        per_layer += l["heads"] * hd + 2 * l["kv_heads"] * hd + h
    if l["mlp_bias"]:
        per_layer += 2 * l["mlp"] + h
    n = l["vocab"] * h + l["layers"] * per_layer + h
    return n + (0 if l["tie_embeddings"] else l["vocab"] * h)


def parameter_counts(config: Mapping[str, Any]) -> dict[str, int]:
    counts = {
        "vision": _vision_params(config["vision"]),
        "abstractor": _abstractor_params(config),
        "llm": _llm_params(config["llm"]),
    }
    counts["total"] = sum(counts.values())
    return counts


def forward_flops(config: Mapping[str, Any], text_tokens: int = 64, images: int = 1) -> dict[str, int]:
    """Multiply-add FLOPs (2 per MAC) of one forward over `images` images and `text_tokens` text tokens.
    Attention counts the full score matrix (QK^T and PV); the vision tower runs only up to the
    deepest feature layer, as vlmzoo does."""
    flops = {"vision": 0, "abstractor": 0}
    v = config["vision"]
    visual = visual_tokens_per_image(config) * images
    if v["kind"] != "none":
        d, m = v["hidden"], v["mlp"]
        patches = (v["image_size"] // v["patch_size"]) ** 2
        t = patches + (1 if v["class_token"] else 0)
        layers = v["feature_layers"] if isinstance(v["feature_layers"], list) else [v["feature_layers"]]
        used = max(x if x >= 0 else x + v["layers"] + 1 for x in layers)
        per_image = 2 * patches * v["channels"] * v["patch_size"] ** 2 * d
        per_image += used * (2 * t * (4 * d * d + 2 * d * m) + 4 * t * t * d)
        flops["vision"] = images * per_image
        flops["abstractor"] = 2 * visual * _abstractor_params(config)
    l = config["llm"]
    seq = text_tokens + visual
    attention = 4 * seq * seq * l["heads"] * l["head_dim"]
    flops["llm"] = l["layers"] * (2 * seq * _llm_layer_matmul_params(l) + attention) + 2 * seq * l["hidden"] * l["vocab"]
    flops["total"] = sum(flops.values())
    return flops


def info(config: str | Mapping[str, Any], text_tokens: int = 64, images: int = 1) -> dict[str, Any]:
    """Parameters (total and per slot), visual tokens per image and forward FLOPs of a config."""
    resolved = resolve_config(config)
    return {
        "name": resolved["name"] or (config if isinstance(config, str) else resolved["family"]),
        "family": resolved["family"],
        "parameters": parameter_counts(resolved),
        "visual_tokens_per_image": visual_tokens_per_image(resolved),
        "text_tokens": text_tokens,
        "images": images,
        "forward_flops": forward_flops(resolved, text_tokens, images),
    }
