"""OpenFlamingo's checkpoint layout (open-flamingo 2.0.1, src/helpers.py and src/flamingo_lm.py) <-> vlmzoo's
flamingo family, for the parts Flamingo adds: the Perceiver Resampler (`perceiver.*`) and the gated
cross-attention blocks (`lang_encoder.gated_cross_attn_layers.<LM layer>.*`, also reachable as
`lang_encoder.<decoder layers>.<i>.gated_cross_attn_layer.*`). The vision tower (open_clip) and the language
model keep their own layouts; their weights come from their own converters.

Facts from the source: PerceiverAttention has norm_media, norm_latents, to_q, fused to_kv, to_out, no biases;
FeedForward is Sequential(LayerNorm, Linear, GELU, Linear) (indices 0, 1, 3); a block sits before LM layer i
when (i + 1) % cross_attn_every_n_layers == 0, with heads 8 x 64, ff_mult 4, scalar tanh gates, LayerNorm
on the text side only, and only_attend_immediate_media. PerceiverResampler(max_num_frames=F, max_num_media=M)
adds `frame_embs` [F, D] and `media_time_embs` [M, 1, D] (vlmzoo's abstractor.max_frames / max_media; Flamingo
itself sets neither).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

_GATED = r"lang_encoder\.gated_cross_attn_layers\.(\d+)\."
# (OpenFlamingo pattern, vlmzoo replacement); {block} is filled from the LM layer -> block table.
_PERCEIVER_RULES = [
    (r"^perceiver\.latents$", "abstractor.latents"),
    (r"^perceiver\.frame_embs$", "abstractor.frame_embs"),
    (r"^perceiver\.media_time_embs$", "abstractor.media_time_embs"),
    (r"^perceiver\.layers\.(\d+)\.0\.norm_media\.(weight|bias)$", r"abstractor.layers.\1.media_norm.\2"),
    (r"^perceiver\.layers\.(\d+)\.0\.norm_latents\.(weight|bias)$", r"abstractor.layers.\1.latents_norm.\2"),
    (r"^perceiver\.layers\.(\d+)\.0\.to_q\.weight$", r"abstractor.layers.\1.q_proj.weight"),
    (r"^perceiver\.layers\.(\d+)\.0\.to_kv\.weight$", r"abstractor.layers.\1.kv_proj.weight"),
    (r"^perceiver\.layers\.(\d+)\.0\.to_out\.weight$", r"abstractor.layers.\1.o_proj.weight"),
    (r"^perceiver\.layers\.(\d+)\.1\.0\.(weight|bias)$", r"abstractor.layers.\1.mlp_norm.\2"),
    (r"^perceiver\.layers\.(\d+)\.1\.1\.weight$", r"abstractor.layers.\1.fc1.weight"),
    (r"^perceiver\.layers\.(\d+)\.1\.3\.weight$", r"abstractor.layers.\1.fc2.weight"),
    (r"^perceiver\.norm\.(weight|bias)$", r"abstractor.norm.\1"),
]
_BLOCK_RULES = [
    (r"attn_gate", "attn_gate"),
    (r"ff_gate", "mlp_gate"),
    (r"attn\.norm\.(weight|bias)", r"attn_norm.\1"),
    (r"attn\.to_q\.weight", "q_proj.weight"),
    (r"attn\.to_kv\.weight", "kv_proj.weight"),
    (r"attn\.to_out\.weight", "o_proj.weight"),
    (r"ff\.0\.(weight|bias)", r"mlp_norm.\1"),
    (r"ff\.1\.weight", "mlp.fc1.weight"),
    (r"ff\.3\.weight", "mlp.fc2.weight"),
]
# The same blocks seen again through the FlamingoLayer wrappers.
_ALIASES = r"^lang_encoder\..*\.gated_cross_attn_layer\."


def openflamingo_blocks(layers: int, every: int) -> dict[int, int]:
    """LM layer index -> vlmzoo block index under OpenFlamingo's rule ((i + 1) % every == 0)."""
    placed = [i for i in range(layers) if (i + 1) % every == 0]
    return {layer: block for block, layer in enumerate(placed)}


def convert_openflamingo(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
                         ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """vlmzoo names (abstractor.*, fusion.*) for OpenFlamingo's perceiver and gated cross-attention tensors;
    returns (mapped, names outside those parts). `config`: the resolved vlmzoo config they load into
    (fusion placement "openflamingo"); a block at an LM layer the config has no block for raises."""
    fusion = config["fusion"]
    if fusion.get("placement") != "openflamingo":
        raise ValueError(f"fusion.placement: {fusion.get('placement')!r}; OpenFlamingo's blocks need \"openflamingo\"")
    blocks = openflamingo_blocks(config["llm"]["layers"], fusion["every"])
    has_perceiver = any(name.startswith("perceiver.") for name in state_dict)
    for name, field in (("perceiver.frame_embs", "max_frames"), ("perceiver.media_time_embs", "max_media")):
        rows, want = (state_dict[name].shape[0] if name in state_dict else 0), config["abstractor"].get(field, 0)
        if has_perceiver and rows != want:
            raise ValueError(f"{name}: {rows} rows in the checkpoint but abstractor.{field} is {want}; set "
                             f"abstractor.{field} to {rows}")
    mapped: dict[str, torch.Tensor] = {}
    others: list[str] = []
    for name, tensor in state_dict.items():
        if re.match(_ALIASES, name):
            continue
        gated = re.match(_GATED + r"(.+)$", name)
        if gated:
            layer, rest = int(gated.group(1)), gated.group(2)
            if layer not in blocks:
                raise ValueError(f"{name}: a gated block before LM layer {layer}, but fusion.every {fusion['every']} "
                                 f"places blocks before layers {sorted(blocks)}")
            for pattern, replacement in _BLOCK_RULES:
                if re.fullmatch(pattern, rest):
                    mapped[f"fusion.blocks.{blocks[layer]}.{re.sub(pattern, replacement, rest)}"] = tensor
                    break
            else:
                others.append(name)
            continue
        for pattern, replacement in _PERCEIVER_RULES:
            if re.match(pattern, name):
                mapped[re.sub(pattern, replacement, name)] = tensor
                break
        else:
            others.append(name)
    return mapped, others
