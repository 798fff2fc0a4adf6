"""Specifications of input checks: bad pixels and token ids are clear ValueErrors, never a silent
wrong answer. The checks live in the core (csrc/nn/vit.cpp check_pixel_values, DecoderVlm::check_inputs),
their one home; these tests hold the model itself to the errors it gives."""
import pytest
import torch

import vlmzoo
from vlmzoo.models.multiway_encoder import MultiwayEncoderModel


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


# ---- every tiny preset, every family: the same bad inputs, the same clear errors
PRESETS = vlmzoo.presets("tiny")
_BUILT = {}


def tiny(name):
    """One model per preset for the whole module (built once; eval mode)."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = vlmzoo.build(name).eval()
    return _BUILT[name]


def is_dual(model):
    """An encoder (CLIP/SigLIP dual encoder, BEiT-3's multiway encoder): no generate, texts paired with images."""
    return not hasattr(model, "generate")


def is_multiway(model):
    return isinstance(model, MultiwayEncoderModel)


def image_size(model):
    return model.config["vision"]["image_size"]


def good_call(model, pixels=None, ids=None, **extra):
    """Every entry point of the model, by name, fed these inputs (a good one where an argument is None)."""
    size = image_size(model)
    pixels = torch.randn(1, 3, size, size) if pixels is None else pixels
    if is_dual(model):
        ids = torch.tensor([[1, 5, 6, 7, 2]]) if ids is None else ids
        if is_multiway(model):  # one pass over [image; text]; its head's outputs (vqa: logits)
            return {"forward": lambda: model(ids, pixels, **extra)}
        return {"forward": lambda: model(ids, pixels, **extra), "image features": lambda: model.get_image_features(pixels),
                "text features": lambda: model.get_text_features(ids, **extra)}
    if ids is None:
        ids = torch.tensor([[1] + [model.image_token_id] * model.visual_tokens_per_image + [5, 6, 7]])
    if model.config["abstractor"].get("instruction") and "qformer_input_ids" not in extra:
        extra = {**extra, "qformer_input_ids": torch.tensor([[1, 5, 6]])}
    return {"forward": lambda: model(ids, pixels, **extra),
            "generate": lambda: model.generate(ids, pixels, max_new_tokens=2, **extra)}


def pixel_entries(calls):
    calls.pop("text features", None)  # reads no pixels
    return calls


def raises_on_every_entry(model, message, calls):
    for entry, call in calls.items():
        with pytest.raises(ValueError, match=message):
            call()
            pytest.fail(f"{entry} accepted the input")


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_takes_its_good_inputs(name):
    """The baseline of the tests below: the same calls with good inputs run and give finite outputs."""
    for call in good_call(tiny(name)).values():
        with torch.no_grad():
            out = call()
        tensors = [out] if isinstance(out, torch.Tensor) else [t for t in out.to_tuple() if t.is_floating_point()]
        assert tensors and all(bool(torch.isfinite(t).all()) for t in tensors)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_every_preset_refuses_integer_pixels(name, dtype):
    model = tiny(name)
    pixels = torch.randint(0, 256, (1, 3, image_size(model), image_size(model))).to(dtype)
    raises_on_every_entry(model, rf"pixel_values: dtype {dtype}; expected floating-point",
                          pixel_entries(good_call(model, pixels)))


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_every_preset_refuses_non_finite_pixels(name, value):
    model = tiny(name)
    pixels = torch.randn(1, 3, image_size(model), image_size(model))
    pixels[0, 2, 5, 7] = value
    counts = "1 NaN and 0 inf" if value != value else "0 NaN and 1 inf"
    raises_on_every_entry(model, f"pixel_values: {counts} values", pixel_entries(good_call(model, pixels)))


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("change", ["half height", "double width", "one channel", "four channels", "no batch"])
def test_every_preset_refuses_wrong_image_sizes_and_channels(name, change):
    model = tiny(name)
    s = image_size(model)
    shape = {"half height": (1, 3, s // 2, s), "double width": (1, 3, s, 2 * s), "one channel": (1, 1, s, s),
             "four channels": (1, 4, s, s), "no batch": (3, s, s)}[change]
    message = (rf"pixel_values: expected \[num_images, 3, {s}, {s}\] \(vision.channels, vision.image_size\), "
               rf"got \[{', '.join(map(str, shape))}\]")
    if model.config["vision"]["kind"] == "patch_linear":  # any size is an image (Fuyu); its token count changes
        n = model.visual_tokens_per_image
        message = {
            "half height": rf"input_ids hold {n} image tokens .* pixel_values give 1 images x {n // 2} visual tokens",
            "double width": rf"input_ids hold {n} image tokens .* pixel_values give 1 images x {2 * n} visual tokens",
            "no batch": rf"pixel_values: read as image patches .* got {s} \(shape \[3, {s}, {s}\]\)",
        }.get(change, rf"pixel_values: expected \[num_images, 3, H, W\] \(vision.channels; any H and W\), "
                       rf"got \[{', '.join(map(str, shape))}\]")
    raises_on_every_entry(model, message, pixel_entries(good_call(model, torch.randn(shape))))


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("where", ["vocab", "vocab + 100", "-1"])
def test_every_preset_refuses_ids_outside_the_vocabulary(name, where):
    model = tiny(name)
    vocab = model.config["llm"]["vocab"]
    bad = {"vocab": vocab, "vocab + 100": vocab + 100, "-1": -1}[where]
    if is_dual(model):
        ids = torch.tensor([[1, 5, bad, 2]])
    else:
        ids = torch.tensor([[1] + [model.image_token_id] * model.visual_tokens_per_image + [5, bad]])
    calls = good_call(model, ids=ids)
    calls.pop("image features", None)  # reads no ids
    raises_on_every_entry(model, rf"input_ids: token ids must lie in \[0, llm.vocab {vocab}\)", calls)


@pytest.mark.parametrize("name", [n for n in PRESETS if not is_dual(tiny(n))])
def test_every_decoder_preset_refuses_more_image_tokens_than_images(name):
    model = tiny(name)
    n = model.visual_tokens_per_image
    if model.config["fusion"]["kind"] == "cross_attention":  # an image is a run of image tokens: two runs, one image
        ids = torch.tensor([[1] + [model.image_token_id] * n + [5] + [model.image_token_id] + [6]])
        raises_on_every_entry(model, rf"input_ids: a row holds 2 images \(runs of fusion.image_token_id "
                                     rf"{model.image_token_id}\) but pixel_values give 1 images per row",
                              good_call(model, ids=ids))
    else:
        ids = torch.tensor([[1] + [model.image_token_id] * (n + 1) + [5]])
        raises_on_every_entry(model, rf"{n + 1} image tokens \(fusion.image_token_id {model.image_token_id}\) but "
                                     rf"pixel_values give 1 images x {n} visual tokens = {n}", good_call(model, ids=ids))
    one_image = torch.tensor([[1] + [model.image_token_id] * n + [5]])
    raises_on_every_entry(model, f"hold {n} image tokens .* but no pixel_values were given",
                          {"forward": lambda: model(one_image), "generate": lambda: model.generate(one_image, max_new_tokens=2)})


@pytest.mark.parametrize("name", [n for n in PRESETS if not is_dual(tiny(n))])
def test_every_decoder_preset_refuses_float_ids(name):
    model = tiny(name)
    ids = torch.tensor([[1] + [model.image_token_id] * model.visual_tokens_per_image + [5]]).float()
    raises_on_every_entry(model, "input_ids: dtype torch.float32; token ids must be integers", good_call(model, ids=ids))


@pytest.mark.parametrize("name", [n for n in PRESETS if is_dual(tiny(n)) and not is_multiway(tiny(n))])
def test_every_dual_encoder_refuses_bad_text(name):
    model = tiny(name)
    longest = model.config["llm"]["max_positions"]
    pixels = torch.randn(1, 3, image_size(model), image_size(model))
    for call in (lambda ids, **k: model(ids, pixels, **k), model.get_text_features):
        with pytest.raises(ValueError, match="input_ids: expected integer token ids, got Float"):
            call(torch.tensor([[1.0, 2.0]]))
        with pytest.raises(ValueError, match=f"input_ids: {longest + 1} tokens, more than the text encoder's "
                                             f"llm.max_positions {longest}"):
            call(torch.ones(1, longest + 1, dtype=torch.long))
        with pytest.raises(ValueError, match=r"attention_mask: expected the shape of input_ids \[1, 4\], got \[1, 3\]"):
            call(torch.tensor([[1, 5, 6, 2]]), attention_mask=torch.ones(1, 3, dtype=torch.long))


# ---- the Q-Former's text (InstructBLIP) and its absence (BLIP-2)
QFORMER_TEXT = [n for n in PRESETS if not is_dual(tiny(n)) and tiny(n).config["abstractor"].get("instruction")]
QFORMER_NO_TEXT = [n for n in PRESETS if not is_dual(tiny(n)) and n not in QFORMER_TEXT]


def test_the_qformer_presets_are_the_expected_ones():
    assert QFORMER_TEXT == ["instructblip-tiny"] and "blip2-opt-tiny" in QFORMER_NO_TEXT


@pytest.mark.parametrize("name", QFORMER_TEXT)
@pytest.mark.parametrize("problem", ["outside vocab", "negative", "float", "rows", "one dim", "mask", "too long"])
def test_instructblip_refuses_bad_qformer_input_ids(name, problem):
    model = tiny(name)
    qformer = model.config["abstractor"]
    qvocab, longest = qformer["vocab"], qformer["max_positions"]
    ids, mask, message = {
        "outside vocab": (torch.tensor([[1, qvocab]]), None, rf"qformer_input_ids: token ids must lie in \[0, {qvocab}\)"),
        "negative": (torch.tensor([[1, -1]]), None, rf"qformer_input_ids: token ids must lie in \[0, {qvocab}\)"),
        "float": (torch.tensor([[1.0, 2.0]]), None, "qformer_input_ids: expected integer token ids, got Float"),
        "rows": (torch.tensor([[1, 2], [1, 2]]), None, r"qformer_input_ids: expected \[num_images 1, tokens\], got \[2, 2\]"),
        "one dim": (torch.tensor([1, 2]), None, r"qformer_input_ids: expected \[num_images 1, tokens\], got \[2\]"),
        "mask": (torch.tensor([[1, 2]]), torch.ones(1, 5, dtype=torch.long),
                 r"qformer_attention_mask: expected the shape of qformer_input_ids \[1, 2\], got \[1, 5\]"),
        "too long": (torch.ones(1, longest + 1, dtype=torch.long), None,
                     f"qformer_input_ids: {longest + 1} tokens, more than abstractor.max_positions {longest}"),
    }[problem]
    calls = good_call(model, qformer_input_ids=ids, qformer_attention_mask=mask)
    calls["encode_images"] = lambda: model.encode_images(torch.randn(1, 3, 64, 64), ids, mask)
    raises_on_every_entry(model, message, calls)


@pytest.mark.parametrize("name", QFORMER_NO_TEXT)
def test_families_without_qformer_text_refuse_qformer_input_ids(name):
    model = tiny(name)
    kind = model.config["abstractor"]["kind"]
    raises_on_every_entry(model, f'qformer_input_ids: abstractor.kind "{kind}" reads no text',
                          good_call(model, qformer_input_ids=torch.tensor([[1, 5, 6]])))
