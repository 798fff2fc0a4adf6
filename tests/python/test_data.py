"""Specifications of the built-in data: tasks, tokenizer, batching, preprocessing."""
import json
import math
import re
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from vlmzoo.data import (
    CLIP_MEAN,
    CLIP_STD,
    SAMPLE_IMAGE_NAMES,
    SIGLIP_MEAN,
    SIGLIP_STD,
    TASKS,
    WordTokenizer,
    build_prompt,
    images_to_tensor,
    make_task,
    sample_image,
)
from vlmzoo.data.digits import DIGIT_IMAGE_SPLITS

SMALL = dict(n_train=300, n_val=60, n_test=120)
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4}


@pytest.fixture(scope="module")
def shapes():
    return make_task("shapes", seed=0, **SMALL)


@pytest.fixture(scope="module")
def digits():
    return make_task("digits", seed=0, **SMALL)


@pytest.fixture(scope="module")
def tasks(shapes, digits):
    return {"shapes": shapes, "digits": digits}


def pixels(image):
    return np.asarray(image)


# ---------------------------------------------------------------- tokenizer


def test_special_tokens_have_fixed_ids():
    tok = WordTokenizer(["red", "circle"])
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.image_id) == (0, 1, 2, 3, 4)
    assert tok.encode("red circle") == [5, 6]
    assert len(tok) == 7


def test_encode_lowercases_and_keeps_question_mark_as_a_token():
    tok = WordTokenizer(["what", "color", "is", "the", "circle", "?"])
    assert tok.encode("What COLOR is the circle?") == tok.encode("what color is the circle ?")
    assert tok.decode(tok.encode("what color is the circle?")) == "what color is the circle ?"


def test_unknown_words_encode_to_unk():
    tok = WordTokenizer(["red"])
    assert tok.encode("red banana") == [5, tok.unk_id]


def test_decode_shows_unknown_words_and_ids_past_the_vocabulary_as_unk():
    tok = WordTokenizer(["red"])
    assert tok.decode(tok.encode("red banana")) == "red <unk>"
    assert tok.decode([5, 99]) == "red <unk>"  # a head rounded up past the vocabulary


def test_decode_skips_special_tokens_unless_asked_not_to():
    tok = WordTokenizer(["yes"])
    ids = [tok.pad_id, tok.bos_id, tok.image_id, 5, tok.eos_id]
    assert tok.decode(ids) == "yes"
    assert tok.decode(ids, skip_special=False) == "<pad> <bos> <image> yes <eos>"


def test_tokenizer_round_trips_through_json():
    tok = WordTokenizer(["a", "b", "?"])
    restored = WordTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert restored == tok
    assert restored.encode("a b ?") == tok.encode("a b ?")


def test_tokenizer_rejects_words_that_are_not_single_tokens():
    with pytest.raises(ValueError, match="single lowercase token"):
        WordTokenizer(["red circle"])
    with pytest.raises(ValueError, match="special token"):
        WordTokenizer(["<image>"])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_tokenizer_covers_every_question_answer_and_caption(tasks, name):
    task = tasks[name]
    for split in ("train", "val", "test", "captions"):
        for e in task.examples(split):
            for text in (e.question, e.answer):
                assert task.tokenizer.unk_id not in task.tokenizer.encode(text), text
                assert task.tokenizer.decode(task.tokenizer.encode(text)) == text


def test_task_tokenizer_does_not_depend_on_seed():
    assert make_task("shapes", seed=1, **SMALL).tokenizer == make_task("shapes", seed=2, **SMALL).tokenizer


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_gives_identical_images_and_questions(tasks, name):
    again = make_task(name, seed=0, **SMALL)
    for a, b in zip(tasks[name].train + tasks[name].test, again.train + again.test):
        assert (a.question, a.answer, a.kind) == (b.question, b.answer, b.kind)
        assert np.array_equal(pixels(a.image), pixels(b.image))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_different_seed_gives_different_examples(tasks, name):
    other = make_task(name, seed=1, **SMALL)
    assert [e.answer for e in other.train] != [e.answer for e in tasks[name].train]
    assert not np.array_equal(pixels(other.train[0].image), pixels(tasks[name].train[0].image))


def test_changing_n_train_leaves_val_and_test_unchanged(shapes):
    bigger = make_task("shapes", seed=0, n_train=400, n_val=SMALL["n_val"], n_test=SMALL["n_test"])
    assert [e.question for e in bigger.test] == [e.question for e in shapes.test]
    assert np.array_equal(pixels(bigger.val[0].image), pixels(shapes.val[0].image))


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("size", [64, 224])
def test_images_are_rgb_at_the_requested_size(name, size):
    task = make_task(name, image_size=size, n_train=4, n_val=1, n_test=1)
    for e in task.train:
        assert e.image.mode == "RGB" and e.image.size == (size, size)


def test_make_task_rejects_an_unknown_name_naming_the_options():
    with pytest.raises(ValueError) as info:
        make_task("nope")
    assert "nope" in str(info.value) and "shapes" in str(info.value) and "digits" in str(info.value)


# ---------------------------------------------------------------- shapes answers, recomputed from the scene


def shapes_of_kind(task, kind):
    found = [e for split in ("train", "val", "test") for e in task.examples(split) if e.kind == kind]
    assert found, f"no {kind} questions generated"
    return found


def find_shape(scene, color, kind):
    matches = [s for s in scene.shapes if s.color == color and s.kind == kind]
    assert len(matches) <= 1, "a (colour, kind) pair appears at most once per scene"
    return matches[0] if matches else None


def test_count_answer_is_the_number_of_shapes_in_words(shapes):
    for e in shapes_of_kind(shapes, "count"):
        assert e.question == "how many shapes ?"
        assert NUMBER_WORDS[e.answer] == len(e.source.shapes)


def test_color_answer_is_the_colour_of_the_only_shape_of_that_kind(shapes):
    for e in shapes_of_kind(shapes, "color"):
        kind = re.fullmatch(r"what color is the (\w+) \?", e.question).group(1)
        of_kind = [s for s in e.source.shapes if s.kind == kind]
        assert len(of_kind) == 1, "colour questions only ask about a kind that appears once"
        assert e.answer == of_kind[0].color


def test_position_answer_follows_the_centres(shapes):
    for e in shapes_of_kind(shapes, "position"):
        m = re.fullmatch(r"is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+) \?", e.question)
        first, second = find_shape(e.source, m.group(1), m.group(2)), find_shape(e.source, m.group(4), m.group(5))
        (x1, y1), (x2, y2) = first.center, second.center
        holds = {"left of": x1 < x2, "right of": x1 > x2, "above": y1 < y2, "below": y1 > y2}[m.group(3)]
        assert e.answer == ("yes" if holds else "no")
        gap = abs(x1 - x2) if m.group(3) in ("left of", "right of") else abs(y1 - y2)
        assert gap >= 0.05, "only clearly separated shapes are compared"


def test_presence_answer_says_whether_that_shape_is_in_the_scene(shapes):
    for e in shapes_of_kind(shapes, "presence"):
        color, kind = re.fullmatch(r"is there a (\w+) (\w+) \?", e.question).groups()
        assert e.answer == ("yes" if find_shape(e.source, color, kind) else "no")


def test_yes_no_answers_are_roughly_balanced(shapes):
    answers = Counter(e.answer for e in shapes.train if e.kind in ("position", "presence"))
    assert 0.35 < answers["yes"] / (answers["yes"] + answers["no"]) < 0.65


def test_scenes_hold_one_to_four_non_overlapping_shapes(shapes):
    for e in shapes.train:
        scene_shapes = e.source.shapes
        assert 1 <= len(scene_shapes) <= 4
        for i, a in enumerate(scene_shapes):
            for b in scene_shapes[i + 1 :]:
                assert math.dist(a.center, b.center) >= a.radius + b.radius


def test_each_shape_is_painted_in_its_colour_at_its_centre(shapes):
    for e in shapes.train[:50]:
        image = pixels(e.image)
        for s in e.source.shapes:
            x, y = (int(c * e.image.size[0]) for c in s.center)
            assert np.abs(image[y, x].astype(int) - np.array(s.fill)).max() <= 1


def test_caption_names_every_shape_left_to_right(shapes):
    for e in shapes.captions[:50]:
        ordered = sorted(e.source.shapes, key=lambda s: s.center[0])
        assert re.findall(r"a (\w+ \w+)", e.answer) == [f"{s.color} {s.kind}" for s in ordered]


def test_every_shapes_question_kind_is_generated(shapes):
    assert set(shapes.kinds) == {"color", "count", "position", "presence"}


# ---------------------------------------------------------------- digits


def test_digits_answer_spells_the_labels_of_the_composed_images(digits):
    labels = load_digits().target
    for e in digits.train + digits.test:
        assert e.question == "what number is written ?"
        assert e.answer == " ".join(str(labels[i]) for i in e.source.image_indices)
        assert 2 <= len(e.answer.split()) <= 4
        assert e.answer[0] != "0", "a written number does not start with 0"


def test_digit_splits_use_disjoint_sklearn_images(digits):
    used = {s: {i for e in digits.examples(s) for i in e.source.image_indices} for s in ("train", "val", "test")}
    assert not used["train"] & used["test"]
    assert not used["train"] & used["val"]
    assert not used["val"] & used["test"]
    assert used["test"] <= set(DIGIT_IMAGE_SPLITS["test"])


# ---------------------------------------------------------------- answers and chance level


@pytest.mark.parametrize("name", sorted(TASKS))
def test_answers_is_the_set_of_all_answers(tasks, name):
    task = tasks[name]
    assert task.answers == {e.answer for s in ("train", "val", "test") for e in task.examples(s)}


def test_chance_accuracy_is_the_majority_train_answer_measured_on_test(shapes):
    for kind in shapes.kinds:
        train = Counter(e.answer for e in shapes.train if e.kind == kind)
        top = max(train.values())
        guess = sorted(a for a, c in train.items() if c == top)[0]
        test = [e.answer for e in shapes.test if e.kind == kind]
        assert shapes.chance_accuracy[kind] == pytest.approx(sum(a == guess for a in test) / len(test))
    assert 0.0 <= shapes.chance_accuracy["all"] <= 1.0


# ---------------------------------------------------------------- batches

VISUAL_TOKENS = 5


@pytest.fixture(scope="module")
def shape_batch(shapes):
    return next(shapes.batches("train", 16, visual_tokens_per_image=VISUAL_TOKENS)), shapes.train[:16]


def test_batch_tensors_have_the_documented_shapes_and_dtypes(shape_batch):
    batch, _ = shape_batch
    rows, length = batch["input_ids"].shape
    assert rows == 16
    assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long
    assert batch["attention_mask"].shape == (16, length) and batch["labels"].shape == (16, length)
    assert batch["pixel_values"].shape == (16, 3, 64, 64) and batch["pixel_values"].dtype == torch.float32


def test_batches_are_left_padded(shape_batch, shapes):
    batch, _ = shape_batch
    tok = shapes.tokenizer
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        n_pad = int((mask == 0).sum())
        assert (ids[:n_pad] == tok.pad_id).all() and (mask[n_pad:] == 1).all()
        assert ids[n_pad] == tok.bos_id and ids[-1] == tok.eos_id
    assert (batch["attention_mask"][:, -1] == 1).all()
    assert (batch["attention_mask"] == 0).any(), "questions differ in length, so some rows are padded"


def test_each_row_has_exactly_visual_tokens_per_image_image_tokens(shape_batch, shapes):
    batch, _ = shape_batch
    assert ((batch["input_ids"] == shapes.tokenizer.image_id).sum(dim=1) == VISUAL_TOKENS).all()


def test_labels_are_set_only_on_the_answer_and_final_eos(shape_batch, shapes):
    batch, examples = shape_batch
    tok = shapes.tokenizer
    for ids, labels, e in zip(batch["input_ids"], batch["labels"], examples):
        supervised = labels != -100
        expected = tok.encode(e.answer) + [tok.eos_id]
        assert labels[supervised].tolist() == expected
        assert ids[-len(expected) :].tolist() == expected, "labels sit on the answer tokens, unshifted"
        assert supervised[-len(expected) :].all() and not supervised[: -len(expected)].any()


def test_build_prompt_is_the_training_row_without_answer(shape_batch, shapes):
    batch, examples = shape_batch
    tok = shapes.tokenizer
    for ids, mask, e in zip(batch["input_ids"], batch["attention_mask"], examples):
        prompt = build_prompt(tok, e.question, VISUAL_TOKENS)
        real = ids[mask == 1].tolist()
        assert real == prompt + tok.encode(e.answer) + [tok.eos_id]
        assert prompt[: 1 + VISUAL_TOKENS] == [tok.bos_id] + [tok.image_id] * VISUAL_TOKENS


def test_batches_cover_the_split_once_and_shuffle_reproducibly(shapes):
    def questions(seed):
        batches = shapes.batches("val", 7, visual_tokens_per_image=1, shuffle=True, seed=seed)
        return [shapes.tokenizer.decode(b["input_ids"][i]) for b in batches for i in range(len(b["input_ids"]))]

    first = questions(0)
    assert len(first) == len(shapes.val)
    assert first == questions(0) and first != questions(1)
    assert Counter(first) == Counter(f"{e.question} {e.answer}" for e in shapes.val)


def test_batches_resize_images_to_the_requested_size(digits):
    batch = next(digits.batches("test", 4, visual_tokens_per_image=2, image_size=96, mean=SIGLIP_MEAN, std=SIGLIP_STD))
    assert batch["pixel_values"].shape == (4, 3, 96, 96)


# ---------------------------------------------------------------- preprocessing and sample images


def test_images_to_tensor_normalises_each_channel_with_mean_and_std():
    from PIL import Image

    image = Image.new("RGB", (8, 8), (255, 0, 128))
    values = images_to_tensor([image, image], 8, CLIP_MEAN, CLIP_STD)
    assert values.shape == (2, 3, 8, 8) and values.is_contiguous()
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), CLIP_MEAN, CLIP_STD)]
    torch.testing.assert_close(values[1, :, 3, 5], torch.tensor(expected))
    siglip = images_to_tensor([image], 4, SIGLIP_MEAN, SIGLIP_STD)
    assert siglip.shape == (1, 3, 4, 4) and siglip.min() >= -1 and siglip.max() <= 1


@pytest.mark.parametrize("name", SAMPLE_IMAGE_NAMES)
def test_sample_images_are_square_rgb_of_the_requested_size(name):
    image = sample_image(name, 96)
    assert image.mode == "RGB" and image.size == (96, 96)
