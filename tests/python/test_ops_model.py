"""A whole model run on the fused ops gives the logits of the same model on the ATen references."""
import torch

import vlmzoo


def llava_inputs(model, batch=2, text_tokens=7):
    g = torch.Generator().manual_seed(0)
    size = model.config["vision"]["image_size"]
    image = [model.image_token_id] * model.visual_tokens_per_image
    vocab = min(1000, model.config["llm"]["vocab"])
    rows = [[1] + image + torch.randint(5, vocab, (text_tokens,), generator=g).tolist() for _ in range(batch)]
    mask = torch.ones(batch, len(rows[0]), dtype=torch.long)
    if batch > 1:
        mask[1, :2] = 0  # left padding in the second row
    pixels = torch.randn(batch, 3, size, size, generator=g)
    return dict(input_ids=torch.tensor(rows), attention_mask=mask, pixel_values=pixels)


def test_llava_fused_and_unfused_logits_agree_within_float32_rounding():
    torch.manual_seed(0)
    model = vlmzoo.build("llava-1.5-tiny").eval()
    x = llava_inputs(model)
    with torch.inference_mode():
        model.fused = True
        fused = model(**x).logits
        model.fused = False
        reference = model(**x).logits
    valid = x["attention_mask"].bool()
    torch.testing.assert_close(fused[valid], reference[valid], atol=1e-4, rtol=1e-4)


def test_llava_fused_and_unfused_generate_the_same_tokens():
    torch.manual_seed(0)
    model = vlmzoo.build("llava-1.5-tiny").eval()
    x = llava_inputs(model, batch=1)
    with torch.inference_mode():
        model.fused = True
        fused = model.generate(**x, max_new_tokens=6, eos_token_id=[])
        model.fused = False
        reference = model.generate(**x, max_new_tokens=6, eos_token_id=[])
    assert torch.equal(fused, reference)
