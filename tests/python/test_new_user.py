"""What a new user tripped on (issue 24, "What else a new user hit"): each behaviour as a test."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from vlmzoo.data import tasks as task_module


@pytest.fixture
def small_named_tasks(monkeypatch):
    """A task name builds make_task's default data; here made small so the test stays fast."""
    real = task_module.make_task
    built = []

    def small(name, **kwargs):
        built.append(name)
        return real(name, **{"n_train": 64, "n_val": 0, "n_test": 8, **kwargs})

    monkeypatch.setattr(task_module, "make_task", small)
    return built


def test_train_and_evaluate_take_a_task_name(small_named_tasks):
    model = vlmzoo.build("llava-1.5-micro")
    result = vlmzoo.train(model, "shapes", budget=2, progress=False)
    assert result.steps == 2 and len(result.losses) == 2
    evaluation = vlmzoo.evaluate(model, "shapes")
    assert evaluation.counts["all"] == 8
    assert small_named_tasks == ["shapes", "shapes"]


def test_an_unknown_task_name_lists_the_built_in_tasks():
    model = vlmzoo.build("llava-1.5-micro")
    with pytest.raises(ValueError, match=r"unknown task 'shape'.*digits, shapes"):
        vlmzoo.train(model, "shape", budget=1)


# ---- vlmzoo info on checkpoint folders
@pytest.fixture(scope="module")
def hf_llava_folder(tmp_path_factory):
    pytest.importorskip("transformers")
    from hf_fixtures import make_hf_llava, save_hf_llava_processor

    folder = tmp_path_factory.mktemp("hf_llava")
    make_hf_llava(folder)
    save_hf_llava_processor(folder)
    return folder


def test_info_reads_a_hugging_face_folder_and_a_vlmzoo_folder(hf_llava_folder, tmp_path):
    model = vlmzoo.from_pretrained(hf_llava_folder)
    row = vlmzoo.info(hf_llava_folder)
    assert row["family"] == "llava" and row["parameters"]["total"] == model.num_parameters()
    assert row["visual_tokens_per_image"] == model.visual_tokens_per_image
    model.save_pretrained(tmp_path / "mine")
    assert vlmzoo.info(str(tmp_path / "mine"))["parameters"] == row["parameters"]


def test_the_info_command_reads_a_checkpoint_folder(hf_llava_folder, capsys):
    from vlmzoo.cli import main

    assert main(["info", str(hf_llava_folder)]) == 0
    assert "llava" in capsys.readouterr().out


# ---- paths that are not there
def test_a_config_path_that_does_not_exist_says_which_part_is_missing(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "llava.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as error:
        vlmzoo.info(str(tmp_path / "configs" / "lava.json"))
    message = str(error.value)
    assert "unknown preset" not in message and "presets are" not in message
    assert "has no 'lava.json'" in message and "'llava.json'" in message  # what is there, close to it


def test_a_name_that_looks_like_a_preset_is_an_unknown_preset_with_close_names():
    with pytest.raises(ValueError, match=r"unknown preset 'llava-1.5-tiyn'.*did you mean 'llava-1.5-tiny'"):
        vlmzoo.info("llava-1.5-tiyn")


def test_a_file_given_where_a_folder_is_expected_says_it_is_a_file(hf_llava_folder):
    with pytest.raises(FileNotFoundError, match=r"model.safetensors' is a file, not a folder"):
        vlmzoo.from_pretrained(hf_llava_folder / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        vlmzoo.build("llava-1.5-micro", llm={"from": str(hf_llava_folder / "config.json")})


def test_a_folder_inside_a_file_says_the_file_is_no_folder(hf_llava_folder):
    with pytest.raises(FileNotFoundError, match=r"config.json' is a file, not a folder"):
        vlmzoo.from_pretrained(hf_llava_folder / "config.json" / "x")


# ---- a misspelled config.json field
def test_a_misspelled_layer_count_names_the_field_and_both_counts(hf_llava_folder, tmp_path):
    import json
    import shutil

    folder = tmp_path / "typo"
    shutil.copytree(hf_llava_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["num_hiden_layers"] = config["text_config"].pop("num_hidden_layers")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as error:
        vlmzoo.from_pretrained(folder)
    message = str(error.value)
    assert "llm.layers: the config implies 32 layers while the checkpoint holds 2" in message
    assert "text_config.num_hiden_layers (unknown; did you mean num_hidden_layers?)" in message
    assert len(message) < 600, message


# ---- processors saved with the model
def test_a_llava_processor_saves_and_reads_back_in_vlmzoo_and_transformers(hf_llava_folder, tmp_path):
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    processor = vlmzoo.AutoProcessor.from_pretrained(hf_llava_folder)
    processor.save_pretrained(tmp_path)
    image = Image.new("RGB", (40, 30), (200, 20, 40))
    text = "<image> what is in the picture ?"
    expected = processor(images=image, text=text, return_tensors="pt")
    for again in (vlmzoo.AutoProcessor.from_pretrained(tmp_path), transformers.AutoProcessor.from_pretrained(tmp_path)):
        got = again(images=image, text=text, return_tensors="pt")
        assert torch.equal(got["input_ids"], expected["input_ids"])
        assert (got["pixel_values"] - expected["pixel_values"]).abs().max() <= 1e-6
    assert vlmzoo.AutoProcessor.from_pretrained(tmp_path).chat_template == processor.chat_template


def test_a_model_from_a_hugging_face_folder_exports_with_its_processor(hf_llava_folder, tmp_path):
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    vlmzoo.from_pretrained(hf_llava_folder).save_pretrained(tmp_path, format="transformers")
    theirs = transformers.AutoProcessor.from_pretrained(tmp_path)
    assert type(theirs).__name__ == "LlavaProcessor"
    image = Image.new("RGB", (32, 32), (10, 200, 40))
    expected = vlmzoo.AutoProcessor.from_pretrained(hf_llava_folder)(images=image, text="<image> a cat", return_tensors="pt")
    assert torch.equal(theirs(images=image, text="<image> a cat", return_tensors="pt")["input_ids"], expected["input_ids"])


def test_a_blip2_from_a_hugging_face_folder_exports_with_its_processor(tmp_path):
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    from blip2_fixtures import QUERIES, make_hf_blip2
    from hf_fixtures import save_hf_blip2_processor

    source = tmp_path / "source"
    make_hf_blip2(source)
    save_hf_blip2_processor(source, num_query_tokens=QUERIES)
    vlmzoo.from_pretrained(source).save_pretrained(tmp_path / "export", format="transformers")
    theirs = transformers.AutoProcessor.from_pretrained(tmp_path / "export")
    assert type(theirs).__name__ == "Blip2Processor"
    image = Image.new("RGB", (40, 40), (10, 200, 40))
    expected = transformers.AutoProcessor.from_pretrained(source)(images=image, text="a cat", return_tensors="pt")
    got = theirs(images=image, text="a cat", return_tensors="pt")
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["pixel_values"], expected["pixel_values"])
