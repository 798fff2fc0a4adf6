"""OpenFlamingo's media-time and frame embeddings in the `perceiver` abstractor: open-flamingo 2.0.1's own
PerceiverResampler(max_num_media, max_num_frames), with the same weights, gives the same latents for
pixel_values [batch, images, frames, C, H, W] (OpenFlamingo's vision_x), and bad layouts fail naming why."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from vlmzoo.families.flamingo.openflamingo import convert_openflamingo

pytest.importorskip("einops")
pytest.importorskip("einops_exts")

from test_openflamingo_parity import CONFIG, open_flamingo_src  # noqa: E402

MEDIA, FRAMES = 3, 4  # rows of media_time_embs and frame_embs
TIMED = dict(CONFIG, abstractor={"max_media": MEDIA, "max_frames": FRAMES})


@pytest.fixture(scope="module")
def pair():
    helpers, _, _ = open_flamingo_src()
    torch.manual_seed(0)
    model = vlmzoo.build("flamingo-tiny", **TIMED).eval()
    abstractor = model.config["abstractor"]
    width = model.config["vision"]["hidden"]
    perceiver = helpers.PerceiverResampler(dim=width, depth=abstractor["layers"], dim_head=abstractor["head_dim"],
                                           heads=abstractor["heads"], num_latents=abstractor["latents"],
                                           max_num_media=MEDIA, max_num_frames=FRAMES).eval()
    with torch.no_grad():  # move the norms off their identity
        for name, p in perceiver.named_parameters():
            if "norm" in name or name.endswith("1.0.weight") or name.endswith("1.0.bias"):
                p.add_(torch.randn_like(p) * 0.5)
    mapped, others = convert_openflamingo({f"perceiver.{k}": v for k, v in perceiver.state_dict().items()},
                                          model.config)
    assert others == [] and {"abstractor.frame_embs", "abstractor.media_time_embs"} <= set(mapped)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith("abstractor.")], (missing, unexpected)
    features = vlmzoo.build("flamingo-tiny", **CONFIG, abstractor={"kind": "identity"}).eval()
    features.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith("vision.")}, strict=False)
    return model, features, perceiver


def expected_latents(features, perceiver, pixels: torch.Tensor) -> torch.Tensor:
    """OpenFlamingo's Flamingo._encode_vision_x: the tower over (b T F), then the resampler on [b, T, F, v, d]."""
    with torch.no_grad():
        media = features.encode_images(pixels.flatten(0, 2))
        return perceiver(media.view(*pixels.shape[:3], *media.shape[1:]))  # [b, T, latents, d]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference-kernels"])
@pytest.mark.parametrize("frames", [1, 3])
def test_latents_match_open_flamingo_with_media_time_and_frames(pair, fused, frames):
    model, features, perceiver = pair
    pixels = torch.randn(2, MEDIA, frames, 3, 64, 64, generator=torch.Generator().manual_seed(frames))
    expected = expected_latents(features, perceiver, pixels)
    model.fused = fused
    with torch.no_grad():
        actual = model.encode_images(pixels)  # [b * T, latents, d]
    model.fused = True
    assert actual.shape == (2 * MEDIA, *expected.shape[2:])
    assert (actual - expected.flatten(0, 1)).abs().max().item() <= 1e-4


def test_media_time_embeddings_tell_the_images_of_a_row_apart(pair):
    model, _, _ = pair
    image = torch.randn(1, 1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        latents = model.encode_images(image.expand(1, 2, 3, 64, 64))  # the same image in slots 0 and 1
        alone = model.encode_images(image)
    assert torch.allclose(latents[0], alone[0], atol=1e-6)
    assert (latents[1] - latents[0]).abs().max().item() > 1e-2


def test_frames_read_as_one_medium_in_the_forward(pair):
    model, _, _ = pair
    g = torch.Generator().manual_seed(6)
    input_ids = torch.tensor([[1, 4, 9, 10, 11, 4, 12, 13]])
    pixels = torch.randn(1, 2, 2, 3, 64, 64, generator=g)
    gates = [p for name, p in model.named_parameters() if name.startswith("fusion.") and "gate" in name]
    with torch.no_grad():
        for gate in gates:  # open the gates (a fresh model's are 0: the images would not count)
            gate.fill_(1.0)
        logits = model(input_ids=input_ids, pixel_values=pixels).logits
        other = pixels.clone()
        other[0, 1, 1] = torch.randn(3, 64, 64, generator=g)  # the second image's second frame
        changed = model(input_ids=input_ids, pixel_values=other).logits
        for gate in gates:
            gate.zero_()
    assert logits.shape == (1, 8, model.config["llm"]["vocab"])
    assert torch.equal(logits[:, :5], changed[:, :5])  # tokens before the second image do not read it
    assert (logits[:, 5:] - changed[:, 5:]).abs().max().item() > 0


def test_more_frames_than_frame_embs_rows_is_an_error(pair):
    model, _, _ = pair
    with pytest.raises(ValueError, match=r"pixel_values: 5 frames per image, but the perceiver's frame_embs has 4 rows "
                                         r"\(abstractor\.max_frames 4\)"):
        model.encode_images(torch.zeros(1, 1, FRAMES + 1, 3, 64, 64))


def test_more_images_per_row_than_media_time_rows_is_an_error(pair):
    model, _, _ = pair
    with pytest.raises(ValueError, match=r"pixel_values: 4 images per row, but the perceiver's media_time_embs has 3 "
                                         r"rows \(abstractor\.max_media 3\)"):
        model.encode_images(torch.zeros(1, MEDIA + 1, 3, 64, 64))


def test_media_time_needs_images_placed_in_rows(pair):
    model, _, _ = pair
    with pytest.raises(ValueError, match=r"abstractor\.max_media 3 adds media-time embeddings by each image's place in "
                                         r"its row; pass pixel_values as \[batch, images"):
        model.encode_images(torch.zeros(2, 3, 64, 64))


def test_frames_under_an_abstractor_that_reads_one_frame_is_an_error():
    model = vlmzoo.build("flamingo-tiny", **CONFIG, abstractor={"kind": "identity"}).eval()
    with pytest.raises(ValueError, match=r"pixel_values: 2 frames per image \(shape \[1, 1, 2, 3, 64, 64\]\), but "
                                         r"abstractor\.kind \"identity\" reads one frame per image"):
        model.encode_images(torch.zeros(1, 1, 2, 3, 64, 64))


def test_frames_without_frame_embs_are_concatenated_as_open_flamingo_does():
    helpers, _, _ = open_flamingo_src()
    torch.manual_seed(1)
    model = vlmzoo.build("flamingo-tiny", **CONFIG).eval()
    abstractor, width = model.config["abstractor"], model.config["vision"]["hidden"]
    perceiver = helpers.PerceiverResampler(dim=width, depth=abstractor["layers"], dim_head=abstractor["head_dim"],
                                           heads=abstractor["heads"], num_latents=abstractor["latents"]).eval()
    mapped, _ = convert_openflamingo({f"perceiver.{k}": v for k, v in perceiver.state_dict().items()}, model.config)
    model.load_state_dict(mapped, strict=False)
    features = vlmzoo.build("flamingo-tiny", **CONFIG, abstractor={"kind": "identity"}).eval()
    features.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith("vision.")}, strict=False)
    pixels = torch.randn(1, 2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        actual = model.encode_images(pixels)
    assert (actual - expected_latents(features, perceiver, pixels).flatten(0, 1)).abs().max().item() <= 1e-4


def test_a_checkpoint_with_media_time_embs_needs_max_media():
    helpers, _, _ = open_flamingo_src()
    config = vlmzoo.resolve_config("flamingo-tiny", **CONFIG)
    abstractor, width = config["abstractor"], config["vision"]["hidden"]
    perceiver = helpers.PerceiverResampler(dim=width, depth=abstractor["layers"], dim_head=abstractor["head_dim"],
                                           heads=abstractor["heads"], num_latents=abstractor["latents"],
                                           max_num_media=2)
    with pytest.raises(ValueError, match=r"perceiver\.media_time_embs: 2 rows in the checkpoint but "
                                         r"abstractor\.max_media is 0; set abstractor\.max_media to 2"):
        convert_openflamingo({f"perceiver.{k}": v for k, v in perceiver.state_dict().items()}, config)


def test_media_time_options_are_counted_and_off_by_default():
    plain = vlmzoo.info(vlmzoo.resolve_config("flamingo-tiny", **CONFIG))
    timed = vlmzoo.info(vlmzoo.resolve_config("flamingo-tiny", **TIMED))
    width = vlmzoo.resolve_config("flamingo-tiny")["vision"]["hidden"]
    assert timed["parameters"]["abstractor"] - plain["parameters"]["abstractor"] == (MEDIA + FRAMES) * width
    assert vlmzoo.resolve_config("flamingo-tiny")["abstractor"]["max_media"] == 0


def test_generate_reads_frames_as_the_forward_does(pair):
    model, _, _ = pair
    g = torch.Generator().manual_seed(8)
    input_ids = torch.tensor([[1, 4, 9, 10, 4, 12]])
    pixels = torch.randn(1, 2, 3, 3, 64, 64, generator=g)
    gates = [p for name, p in model.named_parameters() if name.startswith("fusion.") and "gate" in name]
    with torch.no_grad():
        for gate in gates:
            gate.fill_(1.0)
        expected = input_ids
        for _ in range(6):
            logits = model(input_ids=expected, pixel_values=pixels).logits
            expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], 1)
        actual = model.generate(input_ids=input_ids, pixel_values=pixels, max_new_tokens=6, eos_token_id=[])
        for gate in gates:
            gate.zero_()
    assert torch.equal(actual, expected)
