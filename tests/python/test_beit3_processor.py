"""vlmzoo.AutoProcessor for a torchscale BEiT-3 folder: images resized to img_size (bicubic, no crop)
and normalised with mean = std = 0.5; text through the folder's tokenizer or vlmzoo's word tokenizer,
padded on the right; the outputs pass straight into the model loaded from the same folder."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

import vlmzoo
from beit3_fixtures import make_beit3
from vlmzoo.data.tasks import make_task


def test_processor_from_a_folder_with_the_word_tokenizer_feeds_the_model(tmp_path):
    make_beit3(tmp_path, head="vqa")
    tokenizer = make_task("shapes", n_train=0, n_val=0, n_test=0).tokenizer
    (tmp_path / "vlmzoo_tokenizer.json").write_text(json.dumps(tokenizer.to_dict()))
    processor = vlmzoo.AutoProcessor.from_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    batch = processor(images=[image, image], text=["what colour is the circle ?", "how many shapes ?"],
                      return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    # <bos> 6 words <eos>; <bos> 4 words <eos> then two pads on the right
    assert ids[0, 0] == tokenizer.bos_id and mask[1].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert ids[1, 5] == tokenizer.eos_id and ids[1, 6:].tolist() == [tokenizer.pad_id] * 2
    # pixels: bicubic resize to 32 x 32, then (x / 255 - 0.5) / 0.5
    expected = np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    torch.testing.assert_close(batch["pixel_values"][0], torch.from_numpy((expected - 0.5) / 0.5).permute(2, 0, 1),
                               atol=1e-2, rtol=0)
    model = vlmzoo.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape == (2, 10)


def test_processor_reads_the_folders_transformers_tokenizer(tmp_path):
    from hf_fixtures import make_hf_tokenizer

    make_beit3(tmp_path, head=None)
    make_hf_tokenizer().save_pretrained(tmp_path)
    processor = vlmzoo.AutoProcessor.from_pretrained(tmp_path)
    batch = processor(text=["a red circle", "the cat"], return_tensors="pt")
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 4)
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0]
