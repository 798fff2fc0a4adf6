"""vit's `post_norm_tokens`: open_clip >= 2.24's VisionTransformer applies ln_post to every token before pooling
(final_ln_after_pool False; `x = self.ln_post(x)` then `_global_pool` splits off the class token), so the tokens
OpenFlamingo reads (vision_encoder(x)[1]) come out normed; open_clip 2.16 leaves them as the last block wrote them."""
from __future__ import annotations

import pytest
import torch

import vlmzoo


def test_post_norm_tokens_norms_the_tokens_open_clip_2_24_returns():
    torch.manual_seed(0)
    plain = vlmzoo.build("flamingo-tiny", abstractor={"kind": "identity"}).eval()
    normed = vlmzoo.build("flamingo-tiny", abstractor={"kind": "identity"}, vision={"post_norm_tokens": True}).eval()
    state = plain.state_dict()
    with torch.no_grad():
        state["vision.post_norm.weight"].add_(torch.randn_like(state["vision.post_norm.weight"]) * 0.5)
        state["vision.post_norm.bias"].add_(torch.randn_like(state["vision.post_norm.bias"]) * 0.5)
    plain.load_state_dict(state)
    normed.load_state_dict(state)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = plain.encode_images(pixels)  # open_clip 2.16: the last block's tokens without the class token
        expected = torch.nn.functional.layer_norm(tokens, tokens.shape[-1:], state["vision.post_norm.weight"],
                                                  state["vision.post_norm.bias"], plain.config["vision"]["eps"])
        actual = normed.encode_images(pixels)
    assert (actual - expected).abs().max().item() <= 1e-5
    assert (actual - tokens).abs().max().item() > 0.1
    assert normed.num_parameters() == plain.num_parameters()


def test_post_norm_tokens_is_off_by_default():
    assert vlmzoo.resolve_config("flamingo-tiny")["vision"]["post_norm_tokens"] is False


@pytest.mark.parametrize("vision, why", [
    ({"post_norm_tokens": True, "post_norm": False}, r"vision\.post_norm_tokens: applies post_norm, but "
                                                      r"vision\.post_norm is false"),
    ({"post_norm_tokens": True, "feature_layers": [-2]}, r"vision\.post_norm_tokens: norms the last layer's tokens, "
                                                         r"so vision\.feature_layers must be \[-1\]"),
])
def test_post_norm_tokens_refuses_what_it_cannot_mean(vision, why):
    with pytest.raises(ValueError, match=why):
        vlmzoo.resolve_config("flamingo-tiny", vision=vision)
