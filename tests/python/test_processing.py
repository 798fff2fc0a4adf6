"""Processors give the inputs transformers' processors give, on real photographs shipped by
scikit-learn and scikit-image: identical pixel_values, identical token ids."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hf_fixtures import IMAGE_TOKEN, clip_image_processor, save_hf_blip2_processor, save_hf_llava_processor
from vlmzoo.families import AutoProcessor, Blip2Processor, ImageProcessor, InstructBlipProcessor, LlavaProcessor

transformers = pytest.importorskip("transformers")


def photo(name: str) -> Image.Image:
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(name))
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


PHOTOS = ["china.jpg", "flower.jpg", "astronaut", "chelsea", "coffee"]  # 640x427, 512x512, 451x300, 600x400


IMAGE_PROCESSOR_KINDS = ["clip-224", "clip-odd", "clip-crop-larger-than-image", "clip-longest-edge", "siglip", "blip",
                         "llava-pad"]


def hf_image_processor(kind: str):
    """transformers' PIL-backend image processor (the reference) of each kind the tests cover."""
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    return {
        "clip-224": clip_image_processor(224, (224, 224)),
        "clip-odd": clip_image_processor(37, (33, 35)),
        "clip-crop-larger-than-image": clip_image_processor(20, (24, 26)),
        "clip-longest-edge": CLIPImageProcessorPil(size={"shortest_edge": 30, "longest_edge": 40}, do_center_crop=False),
        "siglip": SiglipImageProcessorPil(size={"height": 48, "width": 40}),
        "blip": BlipImageProcessorPil(size={"height": 40, "width": 40}),
        "llava-pad": LlavaImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 36, "width": 36},
                                            do_pad=True),
    }[kind]


def ours_and_theirs(kind, tmp_path):
    reference = hf_image_processor(kind)
    reference.save_pretrained(tmp_path)
    return ImageProcessor.from_pretrained(tmp_path), reference


def max_abs_diff(a, b) -> float:
    return (torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs().max().item()


@pytest.mark.parametrize("kind", IMAGE_PROCESSOR_KINDS)
@pytest.mark.parametrize("name", PHOTOS)
def test_pixel_values_equal_transformers_image_processor(kind, name, tmp_path):
    ours, reference = ours_and_theirs(kind, tmp_path)
    image = photo(name)
    expected = reference(image, return_tensors="pt")["pixel_values"]
    actual = ours(image)["pixel_values"]
    assert actual.shape == expected.shape and actual.dtype == expected.dtype == torch.float32
    assert expected.std() > 0.1  # a real image, not a constant
    assert max_abs_diff(actual, expected) <= 1e-6


def test_clip_preprocessing_crops_instead_of_squashing(tmp_path):
    # china.jpg is 640x427: the shortest edge goes to 32 and the sides are cropped, so the
    # centre column of the result is the photo's centre, not a squeezed view of the whole.
    ours, _ = ours_and_theirs("clip-odd", tmp_path)
    assert ours.output_height_width(427, 640) == (33, 35)
    squashed = ours.with_options(do_center_crop=False, size={"height": 33, "width": 35})
    image = photo("china.jpg")
    assert max_abs_diff(ours(image).pixel_values, squashed(image).pixel_values) > 0.5


def image_forms(image: Image.Image, tmp_path):
    array = np.array(image)
    path = tmp_path / "photo.png"
    image.save(path)
    return {
        "pil": image,
        "numpy hwc uint8": array,
        "numpy chw uint8": array.transpose(2, 0, 1).copy(),
        "torch chw uint8": torch.from_numpy(array).permute(2, 0, 1),
        "torch hwc uint8": torch.from_numpy(array),
        "path str": str(path),
        "pathlib": path,
        "numpy float in [0, 1]": array.astype(np.float32) / 255,
        "torch float in [0, 1]": torch.from_numpy(array).permute(2, 0, 1).float() / 255,
    }


IMAGE_FORMS = ["pil", "numpy hwc uint8", "numpy chw uint8", "torch chw uint8", "torch hwc uint8", "path str", "pathlib",
               "numpy float in [0, 1]", "torch float in [0, 1]"]


@pytest.mark.parametrize("form", IMAGE_FORMS)
def test_every_image_form_gives_transformers_pixels(form, tmp_path):
    ours, reference = ours_and_theirs("clip-odd", tmp_path / "config")
    value = image_forms(photo("chelsea"), tmp_path)[form]
    as_transformers_takes_it = str(value) if form == "pathlib" else value  # transformers takes str paths only
    expected = reference(as_transformers_takes_it, return_tensors="pt")["pixel_values"]
    assert max_abs_diff(ours(value)["pixel_values"], expected) <= 1e-6


def test_transparency_and_grey_become_rgb_as_in_transformers(tmp_path):
    ours, reference = ours_and_theirs("clip-odd", tmp_path)
    rgba = photo("astronaut").convert("RGBA")
    alpha = np.linspace(0, 255, rgba.size[0] * rgba.size[1]).reshape(rgba.size[1], rgba.size[0]).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    grey_pil = photo("astronaut").convert("L")
    grey_hw1 = np.asarray(grey_pil)[..., None]
    for image in (rgba, np.asarray(rgba), grey_pil, grey_hw1):
        expected = reference(image, return_tensors="pt")["pixel_values"]
        actual = ours(image)["pixel_values"]
        assert actual.shape == expected.shape == (1, 3, 33, 35)
        assert max_abs_diff(actual, expected) <= 1e-6


def test_a_batch_array_is_many_images(tmp_path):
    ours, reference = ours_and_theirs("blip", tmp_path)
    batch = np.stack([np.asarray(photo("astronaut")), np.asarray(photo("astronaut").rotate(90))])
    expected = reference(list(batch), return_tensors="pt")["pixel_values"]
    assert max_abs_diff(ours(batch)["pixel_values"], expected) <= 1e-6
    assert ours(torch.from_numpy(batch).permute(0, 3, 1, 2))["pixel_values"].shape == (2, 3, 40, 40)


def test_bad_images_are_named(tmp_path):
    ours, _ = ours_and_theirs("blip", tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such.png"):
        ours(str(tmp_path / "no-such.png"))
    with pytest.raises(ValueError, match=r"no axis of 1, 3 or 4 channels"):
        ours(np.zeros((5, 6, 7), dtype=np.uint8))
    with pytest.raises(TypeError, match="expected PIL images"):
        ours({"not": "an image"})


def test_unsupported_image_processor_type_is_named(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text('{"image_processor_type": "Qwen2VLImageProcessor"}')
    with pytest.raises(ValueError, match="Qwen2VLImageProcessor.*supported: CLIPImageProcessor"):
        ImageProcessor.from_pretrained(tmp_path)


# ---- LLaVA
@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llava_processor")
    return folder, save_hf_llava_processor(folder)


def assert_same_batch(actual, expected):
    assert sorted(actual) == sorted(k for k in expected if k != "token_type_ids")
    for key in actual:
        if key == "pixel_values":
            assert max_abs_diff(actual[key], expected[key]) <= 1e-6
        else:
            assert torch.equal(actual[key], expected[key]), key


def test_auto_processor_reads_a_llava_folder(llava_folder):
    processor = AutoProcessor.from_pretrained(llava_folder[0])
    assert isinstance(processor, LlavaProcessor)
    assert processor.image_token_id == IMAGE_TOKEN and processor.image_tokens(32, 32) == 16


def test_llava_inputs_equal_transformers_on_a_padded_two_image_batch(llava_folder):
    folder, reference = llava_folder
    ours = AutoProcessor.from_pretrained(folder)
    text = ["USER: <image>\nwhat is in this photo ? ASSISTANT:",
            "USER: <image> and <image> how many cats ? ASSISTANT:"]
    images = [photo("china.jpg"), photo("chelsea"), np.asarray(photo("coffee"))]
    for padding_side in ("left", "right"):
        expected = reference(images=images, text=text, padding=True, padding_side=padding_side, return_tensors="pt")
        actual = ours(images=images, text=text, padding=True, padding_side=padding_side, return_tensors="pt")
        assert_same_batch(actual, expected)
        assert int((actual.input_ids == IMAGE_TOKEN).sum()) == 3 * 16


def test_llava_chat_template_gives_transformers_prompt_and_inputs(llava_folder):
    folder, reference = llava_folder
    ours = AutoProcessor.from_pretrained(folder)
    chat = [{"role": "user", "content": [{"type": "image", "image": photo("astronaut")},
                                         {"type": "text", "text": "describe this photo ."}]}]
    prompt = ours.apply_chat_template(chat, add_generation_prompt=True)
    assert prompt == reference.apply_chat_template(chat, add_generation_prompt=True)
    assert prompt == "USER: <image>\ndescribe this photo . ASSISTANT:"
    expected = reference.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True,
                                             return_tensors="pt")
    actual = ours.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert_same_batch(actual, expected)


def test_llava_placeholders_must_match_images(llava_folder):
    ours = AutoProcessor.from_pretrained(llava_folder[0])
    with pytest.raises(ValueError, match=r"1 <image> placeholders but 2 images"):
        ours(images=[photo("chelsea"), photo("coffee")], text="<image> what is this ?")


def test_llava_folder_without_processor_options_takes_them_from_config(tmp_path):
    from hf_fixtures import make_hf_tokenizer

    make_hf_tokenizer().save_pretrained(tmp_path)
    clip_image_processor(32, (32, 32)).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llava", "vision_config": {"patch_size": 8}}')
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, LlavaProcessor)
    assert processor.image_tokens(32, 32) == 16  # 16 patches + CLS - CLS ("default")


# ---- BLIP-2 and InstructBLIP
@pytest.mark.parametrize("instruct", [False, True], ids=["blip2", "instructblip"])
def test_blip2_inputs_equal_transformers_query_tokens_first(instruct, tmp_path):
    reference = save_hf_blip2_processor(tmp_path, instruct=instruct)
    ours = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(ours, InstructBlipProcessor if instruct else Blip2Processor)
    text = ["what is in the photo ?", "a cat"]
    images = [photo("chelsea"), photo("flower.jpg")]
    for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": 16, "truncation": True}):
        expected = reference(images=images, text=text, return_tensors="pt", **kwargs)
        actual = ours(images=images, text=text, return_tensors="pt", **kwargs)
        assert_same_batch(actual, expected)
    assert actual.input_ids[:, :6].eq(IMAGE_TOKEN).all() and actual.input_ids[0, 6] == 1  # queries, then <s>
    if instruct:
        assert actual.qformer_input_ids.shape == (2, 16)


def test_blip2_text_only_has_no_query_tokens(tmp_path):
    reference = save_hf_blip2_processor(tmp_path)
    ours = AutoProcessor.from_pretrained(tmp_path)
    assert_same_batch(ours(text="a cat", return_tensors="pt"), reference(text="a cat", return_tensors="pt"))


# ---- CLIP and SigLIP (dual encoders: no placeholder, texts and images side by side)
@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_dual_encoder_inputs_equal_transformers(family, tmp_path):
    from transformers import CLIPProcessor, SiglipProcessor

    from hf_fixtures import make_hf_tokenizer
    from vlmzoo.families import DualEncoderProcessor

    image_processor = hf_image_processor("clip-224" if family == "clip" else "siglip")
    processor_class = CLIPProcessor if family == "clip" else SiglipProcessor
    reference = processor_class(image_processor=image_processor, tokenizer=make_hf_tokenizer())
    reference.save_pretrained(tmp_path)
    ours = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(ours, DualEncoderProcessor)
    text = ["a photo of a cat", "a red circle left of the blue square", "the dog"]
    images = [photo("chelsea"), photo("china.jpg")]
    for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": 12, "truncation": True}):
        expected = reference(images=images, text=text, return_tensors="pt", **kwargs)
        actual = ours(images=images, text=text, return_tensors="pt", **kwargs)
        assert_same_batch(actual, expected)
    assert actual.pixel_values.shape[0] == 2 and actual.input_ids.shape == (3, 12)
    assert_same_batch(ours(images=images, return_tensors="pt"), reference(images=images, return_tensors="pt"))


def test_unsupported_processor_class_is_named(tmp_path):
    (tmp_path / "processor_config.json").write_text('{"processor_class": "Qwen2VLProcessor"}')
    with pytest.raises(ValueError, match="Qwen2VLProcessor.*supported: LlavaProcessor"):
        AutoProcessor.from_pretrained(tmp_path)


# ---- vlmzoo's own presets and checkpoints
def test_preset_processor_lays_out_a_training_row():
    from vlmzoo.data import build_prompt, images_to_tensor, make_task

    processor = AutoProcessor.from_pretrained("llava-1.5-tiny")
    tokenizer = make_task("shapes", n_train=0, n_val=0, n_test=0).tokenizer
    image = photo("astronaut")  # square: CLIP's recipe is the plain resize training uses
    batch = processor(images=image, text="how many shapes ?", return_tensors="pt")
    assert batch.input_ids[0].tolist() == build_prompt(tokenizer, "how many shapes ?", 64)
    expected = images_to_tensor([image], 64)
    assert max_abs_diff(batch.pixel_values, expected) <= 2e-6
    assert processor.decode([5, 6, tokenizer.eos_id]) == tokenizer.decode([5, 6])


def test_batch_to_a_dtype_casts_pixels_and_keeps_ids(llava_folder):
    batch = AutoProcessor.from_pretrained(llava_folder[0])(images=photo("coffee"), text="<image> a cat",
                                                           return_tensors="pt")
    batch = batch.to(torch.bfloat16)
    assert batch.pixel_values.dtype == torch.bfloat16 and batch.input_ids.dtype == torch.int64
    assert batch.to("cpu").attention_mask.dtype == torch.int64
    with pytest.raises(AttributeError, match="no key 'labels'"):
        batch.labels


def test_rows_of_different_lengths_need_padding_for_tensors(llava_folder):
    processor = AutoProcessor.from_pretrained(llava_folder[0])
    with pytest.raises(ValueError, match="padding=True"):
        processor(text=["a cat", "a red dog and a cat"], return_tensors="pt")
