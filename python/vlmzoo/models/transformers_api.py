"""transformers' PreTrainedModel methods on the decoder VLM, over the C++ core: get_input_embeddings /
set_input_embeddings (an nn.Embedding whose weight is the C++ tensor itself), resize_token_embeddings
(new rows as transformers' mean_resizing draws them, or N(0, 0.02)), gradient_checkpointing_enable /
disable (each LM layer recomputed in backward, in C++), and the full call (hidden states, attentions,
inputs_embeds) the forward uses when asked."""
from __future__ import annotations

import json
import math
from typing import Any

import torch
from torch import nn
from torch.distributions import constraints
from torch.distributions.multivariate_normal import MultivariateNormal

INIT_STD = 0.02  # transformers' initializer_range default, the std every vlmzoo weight starts from


def shared_embedding(weight: torch.Tensor) -> nn.Embedding:
    """An nn.Embedding whose `weight` is `weight` itself (no copy, no new Parameter), so training it or
    writing into it changes the model."""
    module = nn.Embedding.__new__(nn.Embedding)
    nn.Module.__init__(module)
    module.num_embeddings, module.embedding_dim = weight.shape
    module.padding_idx, module.max_norm, module.norm_type = None, None, 2.0
    module.scale_grad_by_freq, module.sparse = False, False
    module._parameters["weight"] = weight
    return module


def added_rows(old: torch.Tensor, count: int, mean_resizing: bool) -> torch.Tensor:
    """`count` new rows for a [vocab, width] table, as transformers' resize_token_embeddings draws them:
    mean_resizing samples N(mean of the old rows, 1e-9 x their covariance) (the mean itself when that
    covariance is not positive definite); otherwise N(0, 0.02) as a fresh weight."""
    if not mean_resizing:
        return torch.randn(count, old.size(1), dtype=torch.float32).mul_(INIT_STD).to(old.dtype)
    rows = old.detach().float().cpu()
    mean = rows.mean(0)
    centered = rows - mean
    covariance = centered.T @ centered / rows.size(0)
    if constraints.positive_definite.check(1e-9 * covariance).all():
        drawn = MultivariateNormal(mean, covariance_matrix=1e-9 * covariance).sample((count,))
    else:
        drawn = mean[None].repeat(count, 1)
    return drawn.to(old.dtype)


def resized(old: torch.Tensor, rows: int, mean_resizing: bool) -> nn.Parameter:
    """`old` [vocab, width] with `rows` rows: the first rows kept, new ones drawn (added_rows)."""
    keep = min(rows, old.size(0))
    new = torch.empty(rows, old.size(1), dtype=old.dtype, device=old.device)
    with torch.no_grad():
        new[:keep] = old[:keep]
        if rows > keep:
            new[keep:] = added_rows(old, rows - keep, mean_resizing).to(old.device)
    return nn.Parameter(new, requires_grad=old.requires_grad)


class TransformersApi:
    """Mixed into vlmzoo.Model (the decoder VLM): needs `_module` (the C++ VlmModel), `_config` and the
    `llm` view."""

    # ---- input embeddings
    def _parameter_named(self, suffix: str) -> nn.Parameter | None:
        return dict(self.named_parameters()).get(suffix)

    def _embedding_weight(self) -> torch.Tensor:
        weight = self._module.input_embeddings()
        if weight is None:
            raise TypeError(f"get_input_embeddings: llm.kind {self._config['llm']['kind']!r} has no word embeddings")
        for p in self.parameters():
            if p is weight or (p.data_ptr() == weight.data_ptr() and p.shape == weight.shape):
                return p
        return weight

    def get_input_embeddings(self) -> nn.Embedding:
        """The LM's word embeddings as an nn.Embedding [vocab, hidden] whose weight is the C++ parameter."""
        return shared_embedding(self._embedding_weight())

    def set_input_embeddings(self, value: nn.Module) -> None:
        """The LM reads `value.weight` [vocab, hidden] (the tensor itself, shared) as its word embeddings; the
        vocabulary size must stay (resize_token_embeddings changes it). A tied LM head follows it."""
        weight = getattr(value, "weight", None)
        old = self._embedding_weight()
        if not isinstance(weight, torch.Tensor) or weight.shape != old.shape:
            raise ValueError(f"set_input_embeddings: expected a module whose weight is {tuple(old.shape)} "
                             f"(vocab, llm hidden), got {None if weight is None else tuple(weight.shape)}; "
                             "resize_token_embeddings changes the vocabulary")
        if weight.dtype != old.dtype or weight.device != old.device:
            raise ValueError(f"set_input_embeddings: weight is {weight.dtype} on {weight.device}, the model "
                             f"{old.dtype} on {old.device}")
        if not isinstance(weight, nn.Parameter):
            weight = nn.Parameter(weight, requires_grad=old.requires_grad)
            value._parameters["weight"] = weight
        self._set_vocab(weight, self._head_weight())

    def get_output_embeddings(self) -> nn.Module | None:
        """The untied LM head as an nn.Linear-like view, or None when it is tied to the input embeddings."""
        return None if self._module.tied_embeddings() else self.llm.lm_head

    def _head_weight(self) -> nn.Parameter | None:
        if self._module.tied_embeddings():
            return None
        head = self._parameter_named("llm.lm_head.weight")
        if head is None:
            raise TypeError(f"llm.kind {self._config['llm']['kind']!r}: no llm.lm_head.weight to resize")
        return head

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """As transformers': the vocabulary becomes new_num_tokens (rounded up to pad_to_multiple_of), the
        word embeddings and an untied LM head keep their first rows and gain new ones (mean_resizing: drawn
        around the old rows' mean, see added_rows; else N(0, 0.02)); a tied head follows the embeddings.
        llm.vocab in the config follows. Returns get_input_embeddings()."""
        old = self._embedding_weight()
        rows = old.size(0) if new_num_tokens is None else int(new_num_tokens)
        if pad_to_multiple_of is not None:
            if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1:
                raise ValueError(f"pad_to_multiple_of: expected a positive int, got {pad_to_multiple_of!r}")
            rows = math.ceil(rows / pad_to_multiple_of) * pad_to_multiple_of
        if rows < 1:
            raise ValueError(f"new_num_tokens: must be >= 1, got {new_num_tokens}")
        if rows != old.size(0):
            head = self._head_weight()
            self._set_vocab(resized(old, rows, mean_resizing),
                            None if head is None else resized(head, rows, mean_resizing))
        return self.get_input_embeddings()

    def _set_vocab(self, embed: nn.Parameter, head: nn.Parameter | None) -> None:
        self._module.set_vocab(embed, head)
        self._modules["llm"].mirror(self._module.named_children()["llm"])
        object.__setattr__(self, "_config", json.loads(self._module.config_json()))

    # ---- gradient checkpointing
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        """In training with grad enabled, each LM layer keeps only its input and runs again in backward
        (the C++ forward's own recomputation; gradient_checkpointing_kwargs are accepted and unused)."""
        self._module.set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self._module.set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self._module.gradient_checkpointing()
