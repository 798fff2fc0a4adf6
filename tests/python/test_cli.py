"""Specifications of the `vlmzoo` command: tables on success, one clear line and exit 2 on user errors."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vlmzoo.cli import main, study

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PYTHON_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "vlmzoo", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "nope"], "unknown preset 'nope'"),
        (["compare", "--task", "bogus"], "invalid choice: 'bogus'"),
        (["compare", "no-such-model"], "unknown preset 'no-such-model'"),
        (["generate", "nope"], "unknown preset 'nope'"),
    ],
)
def test_user_errors_print_one_clear_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith(f"vlmzoo {args[0]}: error:")


def test_info_describes_every_preset_when_none_is_named(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for preset in ("llava-1.5-tiny", "llava-1.5-7b"):
        assert preset in out
    assert "3.89M" in out and "7.06B" in out


def test_generate_answers_about_a_sample_image(capsys):
    assert main(["generate", "llava-1.5-tiny", "--image", "camera", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "image: camera (512x512 -> 64x64)" in out and "answer:" in out


def test_generate_on_a_hugging_face_folder_prints_its_own_tokenizers_text(tmp_path, capsys):
    # A tiny LLaVA saved by transformers with its own word tokenizer and chat template, a real photo
    # as a file: the answer is the one transformers generates and decodes from the same inputs.
    pytest.importorskip("transformers")
    import torch
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from hf_fixtures import make_hf_llava, save_hf_llava_processor

    reference = make_hf_llava(tmp_path / "ckpt")
    processor = save_hf_llava_processor(tmp_path / "ckpt")
    image_path = tmp_path / "china.png"
    Image.fromarray(load_sample_image("china.jpg")).save(image_path)
    prompt = "describe this photo ."
    code = main(["generate", str(tmp_path / "ckpt"), "--image", str(image_path), "--prompt", prompt,
                 "--max-new-tokens", "8"])
    assert code == 0
    out = capsys.readouterr().out

    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}], add_generation_prompt=True)
    inputs = processor(images=Image.open(image_path), text=text, return_tensors="pt")
    with torch.no_grad():
        output = reference.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=2, pad_token_id=0)
    new = output[0, inputs["input_ids"].shape[1]:].tolist()
    new = new[: new.index(2)] if 2 in new else new
    expected = processor.tokenizer.decode(new, skip_special_tokens=False)
    assert f"prompt: {text!r}" in out and "USER: <image>" in out
    assert f"token ids: {output[0, inputs['input_ids'].shape[1]:].tolist()}" in out
    assert f"answer: {expected}\n" in out
    assert "image: " + str(image_path) + " (640x427 -> 32x32)" in out


def qformer_tokenizer(words, vocab_size):
    """A BERT-style word tokenizer ([CLS] text [SEP]) small enough for the fixture Q-Former's vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    assert len(vocab) <= vocab_size
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


def test_generate_on_an_instructblip_folder_passes_the_instruction_to_the_qformer(tmp_path, capsys, monkeypatch):
    # InstructBLIP's processor tokenizes the prompt for the Q-Former too; the answer is transformers'
    # for the same inputs, with the generation options the command takes.
    pytest.importorskip("transformers")
    import skimage.data
    import torch
    from PIL import Image

    from transformers import InstructBlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    from blip2_fixtures import IMAGE_TOKEN, OPT_VOCAB, QFORMER_VOCAB, QUERIES, make_hf_blip2
    from hf_fixtures import make_hf_tokenizer

    reference = make_hf_blip2(tmp_path / "ckpt", text="llama", instruct=True)
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=make_hf_tokenizer(image_token_id=IMAGE_TOKEN, vocab_size=OPT_VOCAB),
        qformer_tokenizer=qformer_tokenizer("what is in the photo ?".split(), QFORMER_VOCAB),
        num_query_tokens=QUERIES)
    processor.save_pretrained(tmp_path / "ckpt")
    image_path = tmp_path / "coffee.png"
    Image.fromarray(skimage.data.coffee()).save(image_path)
    prompt = "what is in the photo ?"
    import vlmzoo.models.model

    seen = {}
    generate = vlmzoo.models.model.Model.generate
    monkeypatch.setattr(vlmzoo.models.model.Model, "generate", lambda self, **kw: seen.update(kw) or generate(self, **kw))
    assert main(["generate", str(tmp_path / "ckpt"), "--image", str(image_path), "--prompt", prompt,
                 "--max-new-tokens", "8", "--no-repeat-ngram-size", "2"]) == 0
    out = capsys.readouterr().out
    inputs = processor(images=Image.open(image_path), text=prompt, return_tensors="pt")
    # The instruction barely moves this random model's greedy tokens: check that it reached generate.
    assert torch.equal(seen["qformer_input_ids"], inputs["qformer_input_ids"])
    with torch.no_grad():
        output = reference.generate(**inputs, max_new_tokens=8, do_sample=False, no_repeat_ngram_size=2,
                                    eos_token_id=2, pad_token_id=0)
    assert f"token ids: {output[0, inputs['input_ids'].shape[1]:].tolist()}" in out


def test_generate_on_a_folder_vlmzoo_training_wrote_speaks_its_task(tmp_path, capsys):
    import vlmzoo
    from vlmzoo.data import make_task, sample_image
    from vlmzoo.training.train import task_overrides

    task = make_task("shapes", n_train=8, n_val=0, n_test=0, seed=0)
    model = vlmzoo.build("llava-1.5-tiny", **task_overrides(vlmzoo.load_config("llava-1.5-tiny"), task.tokenizer))
    result = vlmzoo.train(model, task, 1, batch_size=4, trainable="all", checkpoint_dir=tmp_path, progress=False)
    image_path = tmp_path / "coffee.png"
    sample_image("coffee", 100).save(image_path)
    assert main(["generate", result.checkpoint, "--image", str(image_path), "--prompt", "how many shapes ?",
                 "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    new_tokens = [int(t) for t in lines["token ids"].strip("[]").split(", ")]
    answer = new_tokens[: new_tokens.index(task.tokenizer.eos_id)] if task.tokenizer.eos_id in new_tokens else new_tokens
    assert lines["answer"] == task.tokenizer.decode(answer, skip_special=False)  # the task's words, not another vocabulary
    assert lines["processor"].startswith("WordProcessor") and lines["image"].endswith("(100x100 -> 64x64)")


def test_generate_refuses_a_processor_that_miscounts_image_tokens(tmp_path, capsys):
    pytest.importorskip("transformers")
    from hf_fixtures import make_hf_llava, save_hf_llava_processor

    make_hf_llava(tmp_path)
    save_hf_llava_processor(tmp_path)
    config = tmp_path / "processor_config.json"
    config.write_text(config.read_text().replace('"num_additional_image_tokens": 1', '"num_additional_image_tokens": 0'))
    assert main(["generate", str(tmp_path), "--image", "camera"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' own save progress
    assert err.startswith("vlmzoo generate: error:") and "puts 15 image tokens" in err and "makes 16 visual tokens" in err


def test_generate_names_an_image_that_is_neither_file_nor_sample(capsys):
    assert main(["generate", "llava-1.5-tiny", "--image", "no-such-photo.jpg"]) == 2
    assert "'no-such-photo.jpg' is neither an image file nor a bundled sample" in capsys.readouterr().err


def test_compare_writes_its_results_where_asked(tmp_path, capsys):
    code = main(["compare", "llava-1.5-tiny", "--budget", "1steps", "--n-train", "8", "--n-test", "4",
                 "--batch-size", "4", "--seeds", "1", "--curve-points", "1", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    assert list(pd.read_csv(tmp_path / "results.csv")["model"]) == ["llava-1.5-tiny"]
    assert "llava-1.5-tiny" in capsys.readouterr().out


@pytest.mark.parametrize("flags, budget", [([], "1e12flops"), (["--full"], "3.5e12flops"), (["--budget", "7"], "7")])
def test_compare_takes_the_default_budget_the_full_study_its_own_and_an_explicit_one_over_both(monkeypatch, flags, budget):
    seen = {}

    def stand_in(configs, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(study, "compare", stand_in)
    with pytest.raises(SystemExit):
        main(["compare", "--quiet", *flags])
    assert seen["budget"] == budget


def test_generate_samples_with_temperature_top_k_top_p_and_a_seed(capsys, monkeypatch):
    import vlmzoo.models.model

    seen = []
    generate = vlmzoo.models.model.Model.generate
    monkeypatch.setattr(vlmzoo.models.model.Model, "generate",
                        lambda self, **kw: seen.append(kw) or generate(self, **kw))
    answers = []
    for seed in (3, 3):
        assert main(["generate", "llava-1.5-micro", "--max-new-tokens", "4", "--temperature", "1.5", "--top-k", "20",
                     "--top-p", "0.9", "--seed", str(seed)]) == 0
        answers.append([line for line in capsys.readouterr().out.splitlines() if line.startswith("token ids:")])
    assert answers[0] == answers[1]  # the same seed, the same sample
    assert {k: seen[0][k] for k in ("do_sample", "temperature", "top_k", "top_p", "seed")} == dict(
        do_sample=True, temperature=1.5, top_k=20, top_p=0.9, seed=3)
    assert main(["generate", "llava-1.5-micro", "--max-new-tokens", "2"]) == 0
    assert "do_sample" not in seen[-1]  # greedy by default


def test_pretrain_has_one_default_budget_in_the_command_and_in_python():
    import inspect

    from vlmzoo.cli import build_parser
    from vlmzoo.training.pretraining import pretrain

    parsed = build_parser().parse_args(["pretrain"])
    assert str(parsed.budget) == str(inspect.signature(pretrain).parameters["budget"].default)


@pytest.mark.parametrize("args, message", [
    (["info", "configs/tiny/lava.json"], "does not exist: the folder"),
    (["generate", "./no/such/folder"], "does not exist: the folder"),
])
def test_a_missing_path_is_not_called_an_unknown_preset(args, message):
    result = run_cli(*args)
    assert result.returncode == 2 and message in result.stderr and "unknown preset" not in result.stderr
