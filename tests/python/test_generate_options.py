"""Generation options as transformers' generate has them, on a tiny random LLaVA: each option changes
the tokens (so the comparison means something) and gives transformers' tokens with the same option;
streaming follows transformers' BaseStreamer protocol, so its TextStreamer and TextIteratorStreamer work."""
from __future__ import annotations

import threading

import pytest
import torch

import vlmzoo
from hf_fixtures import llava_batch, make_hf_llava

transformers = pytest.importorskip("transformers")

NEW = 24


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_llava_generate")
    reference = make_hf_llava(folder)
    return vlmzoo.from_pretrained(folder).eval(), reference


def both(checkpoint, seed=2, **options):
    """(ours, transformers') greedy tokens for the fixture batch with `options`."""
    model, reference = checkpoint
    input_ids, mask, pixels = llava_batch(tokens_per_image=16, seed=seed)
    inputs = dict(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=NEW)
    theirs = reference.generate(**inputs, do_sample=False, pad_token_id=0, **options)
    ours = model.generate(**inputs, **options)
    return ours, theirs


@pytest.mark.parametrize("options", [
    dict(no_repeat_ngram_size=1, eos_token_id=None),
    dict(no_repeat_ngram_size=2, eos_token_id=None),
    dict(no_repeat_ngram_size=3, eos_token_id=None),
    dict(repetition_penalty=1.5, eos_token_id=None),
    dict(repetition_penalty=0.7, no_repeat_ngram_size=2, eos_token_id=None),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items() if k != "eos_token_id"))
def test_an_option_gives_transformers_tokens(checkpoint, options):
    plain, _ = both(checkpoint, eos_token_id=None)
    ours, theirs = both(checkpoint, **options)
    assert not torch.equal(ours, plain)  # the option acts on this batch
    assert torch.equal(ours, theirs)


def test_no_repeat_ngram_size_leaves_no_repeated_ngram_in_a_row(checkpoint):
    ours, _ = both(checkpoint, eos_token_id=None, no_repeat_ngram_size=2)
    for row in ours.tolist():
        start = next(i for i, t in enumerate(row) if t != 0)  # left padding is counted by transformers too
        pairs = list(zip(row[start:], row[start + 1:]))
        generated = pairs[-NEW:]
        assert all(pairs.count(pair) == 1 for pair in generated)


def test_min_new_tokens_holds_eos_back_like_transformers(checkpoint):
    model, _ = checkpoint
    plain, _ = both(checkpoint, eos_token_id=None)
    eos = plain[0, -NEW + 2].item()  # a token row 0 emits early: as eos it would stop that row at step 3
    stopped, theirs_stopped = both(checkpoint, eos_token_id=eos)
    held, theirs_held = both(checkpoint, eos_token_id=eos, min_new_tokens=10)
    assert torch.equal(stopped, theirs_stopped) and torch.equal(held, theirs_held)
    assert not torch.equal(stopped, held)
    assert eos not in held[0, -NEW:-NEW + 10].tolist()


def test_streamer_sees_the_prompt_then_every_new_token(checkpoint):
    model, _ = checkpoint
    input_ids, mask, pixels = llava_batch(tokens_per_image=16, seed=2)

    class Recorder:
        def __init__(self):
            self.puts, self.ended = [], 0

        def put(self, value):
            self.puts.append(value.clone())

        def end(self):
            self.ended += 1

    recorder = Recorder()
    tokens = model.generate(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=NEW,
                            eos_token_id=[], streamer=recorder)
    assert recorder.ended == 1 and len(recorder.puts) == 1 + NEW
    assert torch.equal(recorder.puts[0], input_ids)
    assert all(p.shape == (2,) and p.device.type == "cpu" for p in recorder.puts[1:])
    assert torch.equal(torch.stack(recorder.puts[1:], 1), tokens[:, input_ids.shape[1]:])


class WordTokenizer:
    """The fixture vocabulary spelled as words: decode is all transformers' streamers call."""

    def decode(self, ids, **kwargs):
        return "".join(f" w{i}" for i in ids)


def test_transformers_text_iterator_streamer_works_in_a_thread(checkpoint):
    model, _ = checkpoint
    input_ids, mask, pixels = llava_batch(tokens_per_image=16, seed=2)
    row = slice(1, 2)  # transformers' text streamers take one row
    streamer = transformers.TextIteratorStreamer(WordTokenizer(), skip_prompt=True, timeout=60)
    result = {}
    worker = threading.Thread(target=lambda: result.update(tokens=model.generate(
        input_ids=input_ids[row], pixel_values=pixels[0:1], attention_mask=mask[row], max_new_tokens=NEW,
        eos_token_id=[], streamer=streamer)))
    worker.start()
    text = "".join(streamer)
    worker.join()
    new = result["tokens"][0, input_ids.shape[1]:].tolist()
    assert text == WordTokenizer().decode(new)


def test_transformers_text_streamer_prints_the_new_text(checkpoint, capsys):
    model, _ = checkpoint
    input_ids, mask, pixels = llava_batch(tokens_per_image=16, seed=2)
    streamer = transformers.TextStreamer(WordTokenizer(), skip_prompt=True)
    tokens = model.generate(input_ids=input_ids[1:], pixel_values=pixels[:1], attention_mask=mask[1:],
                            max_new_tokens=NEW, eos_token_id=[], streamer=streamer)
    assert capsys.readouterr().out.strip() == WordTokenizer().decode(tokens[0, input_ids.shape[1]:].tolist()).strip()


def test_an_exception_in_the_streamer_comes_back_as_itself(checkpoint):
    model, _ = checkpoint
    input_ids, mask, pixels = llava_batch(tokens_per_image=16, seed=2)

    class Failing:
        def __init__(self):
            self.calls, self.ended = 0, False

        def put(self, value):
            self.calls += 1
            if self.calls == 4:
                raise KeyError("stop here")

        def end(self):
            self.ended = True

    streamer = Failing()
    with pytest.raises(KeyError, match="stop here"):
        model.generate(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=NEW,
                       streamer=streamer)
    assert streamer.calls == 4 and streamer.ended  # a reading thread is released
    again = model.generate(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=2)
    assert again.shape == (2, input_ids.shape[1] + 2)  # the model still works


@pytest.mark.parametrize("call, message", [
    (dict(streamer=print), "streamer: needs put"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size: must be >= 0"),
    (dict(num_beams=4), "num_beams: beam search is not implemented"),
])
def test_bad_options_are_named(checkpoint, call, message):
    model, _ = checkpoint
    input_ids, mask, pixels = llava_batch(tokens_per_image=16, seed=2)
    with pytest.raises((ValueError, TypeError), match=message):
        model.generate(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=2, **call)


def test_a_right_padded_batch_is_refused_with_the_fix(checkpoint):
    model, _ = checkpoint
    input_ids, mask, pixels = llava_batch(tokens_per_image=16, seed=2)
    right_ids = torch.stack([torch.cat([r[m.bool()], r[~m.bool()]]) for r, m in zip(input_ids, mask)])
    right_mask = (torch.arange(input_ids.shape[1]) < mask.sum(1, keepdim=True)).long()
    assert right_mask[:, -1].min() == 0  # one row ends in padding
    with pytest.raises(ValueError, match="left padding"):
        model.generate(input_ids=right_ids, pixel_values=pixels, attention_mask=right_mask, max_new_tokens=2)
