"""vlmzoo's IDEFICS processor gives transformers' IdeficsProcessor tensors on real images, and its output
drives a converted IDEFICS model exactly as the reference's does."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from flamingo_fixtures import make_hf_idefics, save_hf_idefics_processor

transformers = pytest.importorskip("transformers")


def real_image(name: str):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


PROMPTS = lambda: [  # noqa: E731
    ["user : describe this", real_image("china.jpg"), "a red photo", real_image("flower.jpg"), real_image("china.jpg"),
     "what is in the image ?"],
    ["the cat", real_image("flower.jpg"), "two dogs"],
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_idefics_processor")
    save_hf_idefics_processor(folder)
    return folder


def test_processor_gives_transformers_tensors_on_real_images(folder):
    reference = transformers.AutoProcessor.from_pretrained(folder)
    ours = vlmzoo.AutoProcessor.from_pretrained(folder)
    assert type(ours).__name__ == "IdeficsProcessor"
    expected = reference(text=PROMPTS(), return_tensors="pt")
    actual = ours(text=PROMPTS(), return_tensors="pt")
    assert set(actual.keys()) == set(expected.keys())
    for key in ("input_ids", "attention_mask", "image_attention_mask"):
        assert torch.equal(actual[key], expected[key]), key
    assert actual["pixel_values"].shape == expected["pixel_values"].shape == (2, 3, 3, 32, 32)
    assert (actual["pixel_values"] - expected["pixel_values"]).abs().max() <= 1e-5


def test_text_only_prompts_give_an_all_zero_image_mask(folder):
    expected = transformers.AutoProcessor.from_pretrained(folder)(text=[["the cat"], ["two dogs on the left"]])
    actual = vlmzoo.AutoProcessor.from_pretrained(folder)(text=[["the cat"], ["two dogs on the left"]])
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def test_processor_output_drives_the_converted_model(folder, tmp_path):
    reference_model = make_hf_idefics(tmp_path)
    model = vlmzoo.from_pretrained(tmp_path)
    inputs = vlmzoo.AutoProcessor.from_pretrained(folder)(text=PROMPTS(), return_tensors="pt")
    with torch.no_grad():
        expected = reference_model(**inputs).logits
        actual = model(**inputs).logits
    mask = inputs["attention_mask"].bool()
    assert (actual - expected)[mask].abs().max().item() <= 1e-4
