"""Specifications of input checks: bad pixels and token ids are clear ValueErrors, never a silent
wrong answer. The first half calls vlmzoo.inputs directly; the second half holds the model itself
to the errors it gives today, so they keep holding as the model is restructured."""
import pytest
import torch

import vlmzoo
from vlmzoo.inputs import check_pixel_values, check_token_ids


# ---- vlmzoo.inputs, called directly
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.bool])
def test_integer_pixels_are_refused_with_a_hint_to_normalise(dtype):
    pixels = torch.randint(0, 2 if dtype == torch.bool else 255, (2, 3, 8, 8)).to(dtype)
    with pytest.raises(ValueError, match=rf"pixel_values: dtype {dtype}; expected floating-point .*normalised"):
        check_pixel_values(pixels)


def test_non_finite_pixels_are_counted():
    pixels = torch.randn(2, 3, 8, 8)
    pixels[0, 1, 2, 3] = float("nan")
    pixels[1, 0, 0, :3] = float("nan")
    pixels[1, 2, 7, 7] = float("inf")
    pixels[1, 2, 7, 6] = -float("inf")
    with pytest.raises(ValueError, match=r"images: 4 NaN and 2 inf values of 384 \(first at \(0, 1, 2, 3\)"):
        check_pixel_values(pixels, name="images")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_finite_float_pixels_pass(dtype):
    check_pixel_values(torch.randn(1, 3, 5, 7, dtype=dtype).transpose(2, 3))  # non-contiguous too
    check_pixel_values(None)


def test_pixels_must_be_a_tensor():
    with pytest.raises(TypeError, match="pixel_values: expected a torch.Tensor, got list"):
        check_pixel_values([[0.0]])


def test_token_ids_outside_the_vocabulary_are_named_with_their_positions():
    ids = torch.tensor([[1, 5, 600, 7], [-1, 3, 4, 511]])
    with pytest.raises(ValueError, match=r"input_ids: 2 token ids outside the vocabulary \[0, 512\) \(llm.vocab\): "
                                         r"values from -1 to 600, first at \(0, 2\), \(1, 0\)"):
        check_token_ids(ids, 512)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.float16])
def test_token_ids_must_be_integers(dtype):
    with pytest.raises(ValueError, match=rf"labels: dtype {dtype}; token ids must be integers"):
        check_token_ids(torch.ones(1, 3, dtype=dtype), 512, name="labels")


def test_token_ids_inside_the_vocabulary_pass():
    check_token_ids(torch.tensor([[0, 511]]), 512)
    check_token_ids(torch.tensor([[0, 511]], dtype=torch.int32), 512)
    check_token_ids(torch.zeros(2, 0, dtype=torch.long), 512)
    check_token_ids(None, 512)
    with pytest.raises(ValueError, match=r"\[0, 511\)"):
        check_token_ids(torch.tensor([0, 511]), 511)


# ---- the model's own errors today (llava-1.5-tiny: 64x64x3 images, 64 visual tokens each, vocab 512)
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlmzoo.build("llava-1.5-tiny").eval()


def prompt(model, image_tokens=None, text=(5, 6, 7)):
    n = model.visual_tokens_per_image if image_tokens is None else image_tokens
    return torch.tensor([[1] + [model.image_token_id] * n + list(text)])


def both(model, ids, pixels):
    """The same call through forward and generate: each must give the same error."""
    return [lambda: model(ids, pixels), lambda: model.generate(ids, pixels, max_new_tokens=2)]


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (1, 3, 64, 48), (1, 1, 64, 64), (1, 4, 64, 64), (3, 64, 64)])
def test_wrong_image_size_or_channels_is_an_error(model, shape):
    for call in both(model, prompt(model), torch.randn(shape)):
        with pytest.raises(ValueError, match=r"pixel_values: expected \[num_images, 3, 64, 64\] "
                                             r"\(vision.channels, vision.image_size\), got \[" + ", ".join(map(str, shape))):
            call()


@pytest.mark.parametrize("bad", [512, 600, -1])
def test_ids_outside_the_vocabulary_are_an_error(model, bad):
    for call in both(model, prompt(model, text=(5, bad)), torch.randn(1, 3, 64, 64)):
        with pytest.raises(ValueError, match=r"input_ids: token ids must lie in \[0, llm.vocab 512\)"):
            call()


def test_more_image_tokens_than_images_is_an_error(model):
    for call in both(model, prompt(model, image_tokens=128), torch.randn(1, 3, 64, 64)):
        with pytest.raises(ValueError, match=r"128 image tokens \(fusion.image_token_id 4\) but pixel_values give "
                                             r"1 images x 64 visual tokens = 64"):
            call()


def test_fewer_image_tokens_than_images_is_an_error(model):
    with pytest.raises(ValueError, match=r"64 image tokens .* 2 images x 64 visual tokens = 128"):
        model(prompt(model), torch.randn(2, 3, 64, 64))


def test_image_tokens_without_pixels_are_an_error(model):
    for call in both(model, prompt(model), None):
        with pytest.raises(ValueError, match="64 image tokens .* but no pixel_values were given"):
            call()


def test_ids_must_be_batch_by_tokens(model):
    with pytest.raises(ValueError, match=r"input_ids: expected \[batch, tokens\], got \[3\]"):
        model(torch.tensor([1, 5, 6]))


def test_attention_mask_must_match_the_ids(model):
    with pytest.raises(ValueError, match=r"attention_mask: expected the shape of input_ids \[1, 68\], got \[1, 3\]"):
        model(prompt(model), torch.randn(1, 3, 64, 64), attention_mask=torch.ones(1, 3))


# ---- refused by the model itself (csrc/nn/vit.cpp check_pixel_values, DecoderVlm::check_inputs)


def test_the_model_refuses_integer_pixels(model):
    pixels = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    for call in both(model, prompt(model), pixels):
        with pytest.raises(ValueError, match="pixel_values: dtype torch.uint8; expected floating-point"):
            call()


def test_the_model_refuses_nan_pixels(model):
    pixels = torch.randn(1, 3, 64, 64)
    pixels[0, 0, 0, 0] = float("nan")
    for call in both(model, prompt(model), pixels):
        with pytest.raises(ValueError, match="pixel_values: 1 NaN and 0 inf values"):
            call()


def test_the_model_refuses_float_token_ids(model):
    for call in both(model, prompt(model).float(), torch.randn(1, 3, 64, 64)):
        with pytest.raises(ValueError, match="input_ids: dtype torch.float32; token ids must be integers"):
            call()
