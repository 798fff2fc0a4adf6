"""Fuyu's bad inputs raise a ValueError that names what is wrong."""
from __future__ import annotations

import pytest
import torch

import vlmzoo

PATCH = 8  # fuyu-tiny: 8 x 8 patches of 3 channels, image token 4, 512 positions
WIDTH = PATCH * PATCH * 3


@pytest.fixture(scope="module")
def model():
    return vlmzoo.build("fuyu-tiny").eval()


def row(patches: int, text: int = 3) -> torch.Tensor:
    return torch.tensor([[4] * patches + [1] + [7] * text])


def test_an_image_smaller_than_one_patch_is_refused(model):
    with pytest.raises(ValueError, match=r"an image of 5 x 40 pixels is smaller than one patch \(vision.patch_size 8\)"):
        model(input_ids=row(5), pixel_values=torch.randn(1, 3, 5, 40))


def test_more_image_placeholders_than_patches_is_refused(model):
    with pytest.raises(ValueError, match="input_ids hold 7 image placeholders .* but image_patches give 6 patches"):
        model(input_ids=row(7), image_patches=torch.randn(6, WIDTH))


def test_indices_naming_a_patch_beyond_the_rows_patches_are_refused(model):
    ids = row(7)
    indices = torch.tensor([list(range(7)) + [-1] * 4])
    with pytest.raises(ValueError, match="row 0 names patch 6 but image_patches give that row 6 patches"):
        model(input_ids=ids, image_patches=[torch.randn(1, 6, WIDTH)], image_patches_indices=indices)


def test_indices_that_disagree_with_the_placeholders_are_refused(model):
    ids = row(6)
    indices = torch.tensor([list(range(5)) + [-1] * 5])
    with pytest.raises(ValueError, match="row 0 names a patch at 5 positions but input_ids hold 6 image placeholders"):
        model(input_ids=ids, image_patches=[torch.randn(1, 6, WIDTH)], image_patches_indices=indices)


def test_patches_of_the_wrong_width_are_refused(model):
    with pytest.raises(ValueError, match=r"image_patches: each patch must hold vision.patch_size\^2 x "
                                         r"vision.channels = 192 values, got shape \(6, 100\)"):
        model(input_ids=row(6), image_patches=torch.randn(6, 100))
    with pytest.raises(ValueError, match=r"pixel_values: read as image patches \[N, P, 192\] or \[P, 192\], each "
                                         r"must hold patch_size 8 x 8 x channels 3 = 192 values, got 100"):
        model(input_ids=row(6), pixel_values=torch.randn(6, 100))


def test_a_sequence_longer_than_the_position_range_is_refused(model):
    ids = torch.full((1, 513), 7)
    with pytest.raises(ValueError, match="sequence too long: positions run to 512 but llm.max_positions is 512"):
        model(input_ids=ids)


def test_generate_past_the_position_range_is_refused(model):
    with pytest.raises(ValueError, match="llm.max_positions is 512"):
        model.generate(input_ids=torch.full((1, 510), 7), max_new_tokens=8, eos_token_id=[])


def test_pixel_values_and_image_patches_together_are_refused(model):
    with pytest.raises(ValueError, match="pixel_values and image_patches: pass one of them"):
        model(input_ids=row(6), pixel_values=torch.randn(1, 3, 16, 24), image_patches=torch.randn(6, WIDTH))


def test_a_bad_persimmon_config_names_its_field():
    with pytest.raises(ValueError, match="llm.rotary_fraction"):
        vlmzoo.build("fuyu-tiny", llm={"rotary_fraction": 0.01})
    with pytest.raises(ValueError, match="llm.heads"):
        vlmzoo.build("fuyu-tiny", llm={"heads": 7})
    with pytest.raises(ValueError, match="vision.patch_size"):
        vlmzoo.build("fuyu-tiny", vision={"patch_size": 128})


def test_images_of_any_size_are_padded_to_whole_patches(model):
    # 20 x 30 pixels: 3 x 4 patches, the last row and column padded.
    assert model._module.visual_tokens_for_image(20, 30) == 12
    with torch.no_grad():
        out = model(input_ids=row(12), pixel_values=torch.randn(1, 3, 20, 30))
    assert out.logits.shape == (1, 16, 512)
