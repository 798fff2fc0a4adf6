"""Why a Hugging Face checkpoint does not fit the config its config.json gives: a layer count the
config implies that the weights do not hold, and the config.json fields that look like misspellings
of a field transformers knows (`num_hiden_layers`), which a reader silently replaces by its default."""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Mapping

# Fields of transformers' configs that decide shapes; a near miss of one of these is a misspelling.
SHAPE_FIELDS = (
    "num_hidden_layers", "num_layers", "hidden_size", "intermediate_size", "ffn_dim", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "image_size", "patch_size",
    "projection_dim", "num_channels", "word_embed_proj_dim", "num_query_tokens", "cross_attention_frequency",
    "encoder_hidden_size", "tie_word_embeddings", "image_token_index", "image_token_id", "vision_feature_layer",
    "vision_feature_select_strategy", "rms_norm_eps", "layer_norm_eps", "rope_theta", "hidden_act",
    "text_config", "vision_config", "qformer_config", "perceiver_config", "model_type",
)
_LAYER = re.compile(r"^(.*?\blayers)\.(\d+)\.")


def layer_counts(names: Iterable[str]) -> dict[str, int]:
    """"llm.layers" -> how many layers the names hold there (highest index + 1)."""
    counts: dict[str, int] = {}
    for name in names:
        match = _LAYER.match(name)
        if match:
            counts[match[1]] = max(counts.get(match[1], 0), int(match[2]) + 1)
    return counts


def _fields(config: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for key, value in config.items():
        yield prefix, key
        if isinstance(value, Mapping):
            yield from _fields(value, f"{prefix}{key}.")


def misspelled_fields(hf_config: Mapping[str, Any]) -> list[str]:
    """"text_config.num_hiden_layers (did you mean num_hidden_layers?)" for each field near a known one."""
    found = []
    for prefix, key in _fields(hf_config):
        if key in SHAPE_FIELDS:
            continue
        close = difflib.get_close_matches(key, SHAPE_FIELDS, n=1, cutoff=0.85)
        if close:
            found.append(f"{prefix}{key} (unknown; did you mean {close[0]}?)")
    return found


def explain_layer_mismatch(hf_config: Mapping[str, Any], expected: Iterable[str], given: Iterable[str],
                           where: str) -> str | None:
    """A short message when the config's layer counts differ from the checkpoint's, else None."""
    wanted, held = layer_counts(expected), layer_counts(given)
    differ = [f"{stack}: the config implies {wanted[stack]} layers while the checkpoint holds {held.get(stack, 0)}"
              for stack in sorted(wanted) if wanted[stack] != held.get(stack, 0) and held.get(stack, 0) > 0]
    if not differ:
        return None
    fields = misspelled_fields(hf_config)
    why = (f"; config.json has {', '.join(fields)}, so the default was used" if fields
           else "; check num_hidden_layers (or its family's name for it) in config.json")
    return f"{where} does not match its weights: {'; '.join(differ)}{why}"
