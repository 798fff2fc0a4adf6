"""inputs_embeds, get_input_embeddings / set_input_embeddings and resize_token_embeddings, as transformers'
PreTrainedModel has them, on the tiny random LLaVA (untied Llama head), BLIP-2 OPT (tied head) and Fuyu."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import vlmzoo
from blip2_fixtures import blip2_batch, make_hf_blip2
from fuyu_fixtures import fuyu_batch, make_hf_fuyu
from hf_fixtures import VOCAB, llava_batch, make_hf_llava

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_llava_embeddings")
    return folder, make_hf_llava(folder)


def real_max_diff(a, b, mask):
    return (a.float() - b.float())[mask.bool()].abs().max().item()


# ---- inputs_embeds
def test_llava_inputs_embeds_with_pixels_match_transformers_and_input_ids(llava):
    folder, reference = llava
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, pixels = llava_batch(tokens_per_image=16)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(input_ids)
        from_ids = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask).logits
        actual = model(inputs_embeds=embeds, pixel_values=pixels, attention_mask=mask).logits
        expected = reference(inputs_embeds=reference.get_input_embeddings()(input_ids), pixel_values=pixels,
                             attention_mask=mask).logits
    assert real_max_diff(actual, expected, mask) <= TOLERANCE
    assert torch.equal(actual, from_ids)


def test_text_only_inputs_embeds_are_read_as_given(llava):
    folder, reference = llava
    model = vlmzoo.from_pretrained(folder)
    g = torch.Generator().manual_seed(4)
    embeds = torch.randn(2, 7, model.config["llm"]["hidden"], generator=g) * 0.05  # no word's embedding
    with torch.no_grad():
        actual = model(inputs_embeds=embeds).logits
        expected = reference(inputs_embeds=embeds).logits
    assert (actual - expected).abs().max().item() <= TOLERANCE


def test_inputs_embeds_gradient_reaches_the_caller(llava):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    embeds = (torch.randn(1, 5, model.config["llm"]["hidden"]) * 0.05).requires_grad_(True)
    model(inputs_embeds=embeds).logits.sum().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0


def test_inputs_embeds_and_input_ids_together_or_neither_are_refused(llava):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    ids = torch.tensor([[1, 5, 6]])
    with pytest.raises(ValueError, match="exactly one"):
        model(input_ids=ids, inputs_embeds=model.get_input_embeddings()(ids))
    with pytest.raises(ValueError, match="exactly one"):
        model(attention_mask=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="inputs_embeds: expected"):
        model(inputs_embeds=torch.zeros(1, 3, 7))


def test_blip2_inputs_embeds_match_transformers_input_ids_logits(tmp_path):
    # Blip2ForConditionalGeneration (5.24) requires input_ids; ours takes their embeddings instead.
    reference = make_hf_blip2(tmp_path, text="opt")
    model = vlmzoo.from_pretrained(tmp_path)
    input_ids, mask, pixels = blip2_batch("opt")
    with torch.no_grad():
        actual = model(inputs_embeds=model.get_input_embeddings()(input_ids), attention_mask=mask,
                       pixel_values=pixels).logits
        expected = reference(input_ids=input_ids, attention_mask=mask, pixel_values=pixels).logits
    assert real_max_diff(actual, expected, mask) <= TOLERANCE


def test_fuyu_inputs_embeds_give_the_input_ids_logits(tmp_path):
    make_hf_fuyu(tmp_path)
    model = vlmzoo.from_pretrained(tmp_path)
    input_ids, mask, _, patches, _ = fuyu_batch()
    with torch.no_grad():
        from_ids = model(input_ids=input_ids, pixel_values=torch.cat(patches), attention_mask=mask).logits
        from_embeds = model(inputs_embeds=model.get_input_embeddings()(input_ids), pixel_values=torch.cat(patches),
                            attention_mask=mask).logits
    assert torch.equal(from_ids, from_embeds)


def test_fuyu_image_patches_need_input_ids_to_be_placed(tmp_path):
    make_hf_fuyu(tmp_path)
    model = vlmzoo.from_pretrained(tmp_path)
    input_ids, mask, _, patches, _ = fuyu_batch()
    with pytest.raises(ValueError, match="with inputs_embeds pass the concatenated patches as pixel_values"):
        model(inputs_embeds=model.get_input_embeddings()(input_ids), image_patches=torch.cat(patches),
              attention_mask=mask)


# ---- get / set input embeddings
def test_get_input_embeddings_is_an_embedding_sharing_the_cpp_weight(llava):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, nn.Embedding)
    assert embedding.weight is model.get_parameter("llm.embed_tokens.weight")
    assert embedding.weight.shape == (VOCAB, model.config["llm"]["hidden"])
    ids = torch.tensor([[1, 7, 9]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        embedding.weight[7].mul_(3.0)  # writing through it changes the model
        after = model(input_ids=ids).logits
    assert not torch.allclose(before[0, 1:], after[0, 1:])


def test_set_input_embeddings_shares_the_new_weight(llava):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    ids = torch.tensor([[1, 7, 9]])
    new = nn.Embedding(VOCAB, model.config["llm"]["hidden"])
    model.set_input_embeddings(new)
    assert model.get_input_embeddings().weight is new.weight
    assert dict(model.named_parameters())["llm.embed_tokens.weight"] is new.weight
    with torch.no_grad():
        expected = model(inputs_embeds=new(ids)).logits
        actual = model(input_ids=ids).logits
    assert torch.equal(actual, expected)
    with pytest.raises(ValueError, match="resize_token_embeddings"):
        model.set_input_embeddings(nn.Embedding(VOCAB + 1, model.config["llm"]["hidden"]))


# ---- resize_token_embeddings
@pytest.mark.parametrize("mean_resizing", [True, False], ids=["mean", "normal"])
def test_resize_untied_llava_grows_embeddings_head_and_logits(llava, mean_resizing):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, pixels = llava_batch(tokens_per_image=16)
    with torch.no_grad():
        before = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask).logits
    old_embed = model.get_input_embeddings().weight.detach().clone()
    torch.manual_seed(0)
    embedding = model.resize_token_embeddings(VOCAB + 3, mean_resizing=mean_resizing)
    assert embedding.weight.shape == (VOCAB + 3, old_embed.shape[1])
    assert model.config["llm"]["vocab"] == VOCAB + 3
    head = model.get_parameter("llm.lm_head.weight")
    assert head.shape == (VOCAB + 3, old_embed.shape[1])
    assert torch.equal(embedding.weight[:VOCAB], old_embed)
    new_rows = embedding.weight[VOCAB:].detach()
    if mean_resizing:  # transformers: drawn around the old rows' mean with 1e-9 x their covariance
        assert (new_rows - old_embed.mean(0)).abs().max() < 1e-4
    else:
        assert 0.005 < new_rows.std().item() < 0.05
    with torch.no_grad():
        after = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask).logits
        new_token = model(input_ids=torch.tensor([[1, VOCAB + 2]])).logits
    assert after.shape == (*before.shape[:2], VOCAB + 3)
    assert torch.equal(after[..., :VOCAB], before)
    assert new_token.shape == (1, 2, VOCAB + 3)
    assert any(p is embedding.weight for p in model.parameters())


def test_resize_tied_opt_head_follows_the_embeddings(tmp_path):
    make_hf_blip2(tmp_path, text="opt")
    model = vlmzoo.from_pretrained(tmp_path)
    vocab = model.config["llm"]["vocab"]
    model.resize_token_embeddings(vocab + 5, pad_to_multiple_of=8)
    rows = -(-(vocab + 5) // 8) * 8
    assert model.get_input_embeddings().weight.shape[0] == rows == model.config["llm"]["vocab"]
    assert "llm.lm_head.weight" not in dict(model.named_parameters())
    input_ids, mask, pixels = blip2_batch("opt")
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, output_hidden_states=True)
    expected = out.hidden_states[-1] @ model.get_input_embeddings().weight.T
    assert out.logits.shape[-1] == rows
    assert torch.allclose(out.logits, expected, atol=1e-5)


def test_resized_model_trains_and_saves(llava, tmp_path):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    model.resize_token_embeddings(VOCAB + 2)
    ids = torch.tensor([[1, VOCAB, VOCAB + 1, 5]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.get_input_embeddings().weight.grad[VOCAB:].abs().sum() > 0
    model.save_pretrained(tmp_path / "resized")
    loaded = vlmzoo.from_pretrained(tmp_path / "resized")
    assert loaded.config["llm"]["vocab"] == VOCAB + 2
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_shrinking_below_the_image_token_is_refused(llava):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    with pytest.raises(ValueError, match="image_token_id"):
        model.resize_token_embeddings(50)
    assert model.config["llm"]["vocab"] == VOCAB
