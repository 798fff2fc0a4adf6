"""vlmzoo's Fuyu processor gives the tensors transformers' FuyuProcessor gives, on real and random images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vlmzoo
from fuyu_fixtures import make_hf_fuyu_processor

transformers = pytest.importorskip("transformers")


def photo():
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg"))  # 427 x 640


def random_image(height, width, seed):
    return Image.fromarray((np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8))


def compare(ours, theirs):
    assert set(ours) >= {"input_ids", "attention_mask", "image_patches"}
    for key in ("input_ids", "attention_mask", "image_patches"):
        assert ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key].to(theirs[key].dtype), theirs[key]), key


def test_a_real_photo_and_its_text_give_transformers_tensors(tmp_path):
    reference = make_hf_fuyu_processor(tmp_path)
    processor = vlmzoo.AutoProcessor.from_pretrained(tmp_path)
    assert type(processor).__name__ == "FuyuProcessor"
    text = "describe the image"
    theirs = reference(images=photo(), text=text, return_tensors="pt")
    ours = processor(images=photo(), text=text, return_tensors="pt")
    compare(ours, theirs)
    assert ours["image_patches"].shape == (15 * 22, 30 * 30 * 3)  # 427 x 640: 15 rows of 22 patches
    assert int((ours["input_ids"] == processor.newline_token_id).sum()) == 15


def test_a_batch_of_two_sizes_resized_and_left_padded_matches(tmp_path):
    # A 90 x 120 canvas: the 200 x 130 image shrinks (to 90 x 58), the 40 x 50 one is padded to 2 x 2 patches.
    options = dict(size={"height": 90, "width": 120}, patch_size={"height": 30, "width": 30})
    reference = make_hf_fuyu_processor(tmp_path, **options)
    processor = vlmzoo.AutoProcessor.from_pretrained(tmp_path)
    images = [random_image(200, 130, 0), random_image(40, 50, 1)]
    texts = ["what is in the image ?", "a cat"]
    theirs = reference(images=images, text=texts, return_tensors="pt")
    ours = processor(images=images, text=texts, return_tensors="pt")
    compare(ours, theirs)
    assert ours["attention_mask"][1, 0] == 0  # the shorter row is padded on the left


def test_the_processors_output_runs_through_a_fuyu_model(tmp_path):
    make_hf_fuyu_processor(tmp_path, size={"height": 60, "width": 60}, patch_size={"height": 8, "width": 8})
    processor = vlmzoo.AutoProcessor.from_pretrained(tmp_path)
    vocab = json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]
    model = vlmzoo.build("fuyu-tiny", fusion={"image_token_id": vocab["|SPEAKER|"]}).eval()
    inputs = processor(images=[random_image(30, 45, 2), random_image(50, 20, 3)], text=["a cat", "red dog"],
                       return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, 512)
    tokens = model.generate(**inputs, max_new_tokens=3, eos_token_id=[])
    assert tokens.shape == (2, inputs["input_ids"].shape[1] + 3)


def test_the_generate_command_on_a_fuyu_folder_gives_transformers_answer(tmp_path, capsys):
    from vlmzoo.cli import main

    from fuyu_fixtures import make_hf_fuyu

    reference_processor = make_hf_fuyu_processor(tmp_path, size={"height": 90, "width": 120},
                                                 patch_size={"height": 30, "width": 30})
    speaker = reference_processor.tokenizer.convert_tokens_to_ids("|SPEAKER|")
    reference = make_hf_fuyu(tmp_path, image_token_id=speaker, patch_size=30, seed=8)
    image_path = tmp_path / "photo.png"
    photo().save(image_path)
    inputs = reference_processor(images=Image.open(image_path), text="describe the image", return_tensors="pt")
    expected = reference.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                  pixel_values=inputs["image_patches"], max_new_tokens=4, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
    assert main(["generate", str(tmp_path), "--image", str(image_path), "--prompt", "describe the image",
                 "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert f"token ids: {expected[0, inputs['input_ids'].shape[1]:].tolist()}" in out
    assert "(640x427 -> 12 patches)" in out  # shrunk to fit 90 x 120: 90 x 134 -> 84 x 120 -> 3 x 4 patches
