"""vlmzoo.pretrain, its user cache, and slots taken from pretrained towers ({"from": NAME})."""
import json

import pytest
import torch

import vlmzoo
from vlmzoo.config import towers
from vlmzoo.models import towers as tower_weights
from vlmzoo.storage import cache
from vlmzoo.training import pretraining
from vlmzoo.cli import build_parser
from vlmzoo.data import make_task
from vlmzoo.training.recipes import recipe_for, stage_plan
from vlmzoo.training.rows import model_for_task
from vlmzoo.training.train import train

TINY = {"n_train": 48, "n_test": 16}
TEST_TOWERS = {
    "clip-test": towers.Tower("clip-test", "clip-tiny", "vision", "shapes", 2, task_sizes=tuple(TINY.items())),
    "lm-test": towers.Tower("lm-test", "llava-1.5-tiny", "llm", "shapes", 2, task_sizes=tuple(TINY.items())),
}


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    """A private cache (never ~/.cache) and two tiny towers (2 steps on 48 examples)."""
    monkeypatch.setenv("VLMZOO_CACHE", str(tmp_path / "cache"))
    for name, tower in TEST_TOWERS.items():
        monkeypatch.setitem(towers.TOWERS, name, tower)
    tower_weights.forget_entries()
    yield tmp_path / "cache"
    tower_weights.forget_entries()


@pytest.fixture()
def count_training(monkeypatch):
    calls = []
    real = pretraining._train_loop

    def counting(*args, **kwargs):
        calls.append(args[0].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(pretraining, "_train_loop", counting)
    return calls


def test_a_second_pretrain_reads_the_cache_instead_of_training(cache_dir, count_training):
    first = vlmzoo.pretrain("clip-tiny", "shapes", 2, task_sizes=TINY, progress=False)
    second = vlmzoo.pretrain("clip-tiny", "shapes", 2, task_sizes=TINY, progress=False)
    assert count_training == ["clip-tiny"]  # trained once
    assert (first.from_cache, second.from_cache) == (False, True)
    assert first.cache_folder == second.cache_folder and first.cache_folder.parent.parent == cache_dir
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    record = json.loads((first.cache_folder / cache.ENTRY_FILE).read_text())
    assert record["metrics"] == second.metrics and set(second.metrics) >= {
        "text_to_image_recall@1", "text_to_image_recall@5", "image_to_text_recall@1", "image_to_text_recall@5"}
    assert record["pretraining_flops"] == second.pretraining_flops > 0


def test_the_cache_key_changes_with_seed_config_budget_and_data():
    base = pretraining.pretrain_spec("clip-tiny", "shapes", 2, seed=0, task_sizes=TINY)
    assert cache.cache_key(base) == cache.cache_key(pretraining.pretrain_spec("clip-tiny", "shapes", 2, 0, TINY))
    others = [
        pretraining.pretrain_spec("clip-tiny", "shapes", 2, seed=1, task_sizes=TINY),
        pretraining.pretrain_spec("siglip-tiny", "shapes", 2, seed=0, task_sizes=TINY),
        pretraining.pretrain_spec({**vlmzoo.load_config("clip-tiny"), "head": {"kind": "contrastive", "dim": 64}},
                                  "shapes", 2, seed=0, task_sizes=TINY),
        pretraining.pretrain_spec("clip-tiny", "shapes", 3, seed=0, task_sizes=TINY),
        pretraining.pretrain_spec("clip-tiny", "shapes", 2, seed=0, task_sizes={**TINY, "n_train": 49}),
        pretraining.pretrain_spec("clip-tiny", "digits", 2, seed=0, task_sizes=TINY),
    ]
    keys = {cache.cache_key(spec) for spec in [base, *others]}
    assert len(keys) == 1 + len(others)


def test_an_entry_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMZOO_CACHE", str(tmp_path))
    spec = {"what": "test"}
    state = {"w": torch.randn(3, 5)}

    def failing_build():
        raise RuntimeError("killed while training")

    with pytest.raises(RuntimeError):
        cache.cached("pretrain", spec, failing_build)
    # A failure after the weights were written, before the record: nothing is visible under the entry's name.
    import vlmzoo.storage.atomic as atomic

    def failing_record(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(atomic, "atomic_write_text", failing_record)
    with pytest.raises(OSError):
        cache.cached("pretrain", spec, lambda: ({"metrics": {}}, state))
    folder = cache.entry_folder("pretrain", spec)
    assert not folder.exists() and cache.read_entry(folder) is None
    assert [p.name for p in folder.parent.iterdir()] == []  # no staging leftovers either
    monkeypatch.undo()
    monkeypatch.setenv("VLMZOO_CACHE", str(tmp_path))
    entry = cache.cached("pretrain", spec, lambda: ({"metrics": {"x": 1.0}}, state))
    again = cache.cached("pretrain", spec, failing_build)  # a hit: build is not called
    assert (entry.hit, again.hit) == (False, True) and torch.equal(again.state_dict["w"], state["w"])


def test_a_from_slot_takes_the_towers_config_and_exactly_its_weights(cache_dir, count_training):
    model = vlmzoo.build("llava-1.5-tiny", vision={"from": "clip-test"}, llm={"from": "lm-test"})
    assert model.config["vision"]["from"] == "clip-test" and model.config["llm"]["from"] == "lm-test"
    assert model.config["vision"]["feature_layers"] == [-2]  # the host's reading of the tower, not CLIP's [-1]
    assert sorted(count_training) == ["clip-tiny", "llava-1.5-tiny"]  # each tower pretrained on first use
    clip = tower_weights.tower_state("clip-test")
    lm = tower_weights.tower_state("lm-test")
    own = dict(model.named_parameters())
    assert {k for k in own if k.startswith("vision.")} <= set(clip)
    for name, p in own.items():
        source = clip if name.startswith("vision.") else lm if name.startswith("llm.") else None
        if source is not None:
            assert torch.equal(p, source[name]), name
    # A compare row re-initialises from its seed, but the tower slots keep the towers' weights.
    task = make_task("shapes", n_train=8, n_val=0, n_test=4)
    row = model_for_task({**vlmzoo.load_config("llava-1.5-tiny"), "vision": {"from": "clip-test"}}, task, seed=3)
    assert all(torch.equal(p, clip[k]) for k, p in row.named_parameters("vision"))
    assert len(count_training) == 2  # built once, reused


def test_unknown_towers_and_conflicting_fields_name_the_json_path():
    with pytest.raises(ValueError, match=r"vision\.from: unknown tower 'clip-huge'; towers: .*clip-tiny-shapes"):
        vlmzoo.resolve_config("llava-1.5-tiny", vision={"from": "clip-huge"})
    with pytest.raises(ValueError, match=r"vision\.hidden: the tower 'clip-tiny-shapes' fixes hidden=128; got 64"):
        vlmzoo.resolve_config("llava-1.5-tiny", vision={"from": "clip-tiny-shapes", "hidden": 64})
    # Fields that only choose how the tower is read may be set; repeating the tower's own values is fine.
    resolved = vlmzoo.resolve_config("llava-1.5-tiny", vision={"from": "clip-tiny-shapes", "feature_layers": -1,
                                                               "hidden": 128})
    assert resolved["vision"]["feature_layers"] == [-1] and resolved["vision"]["from"] == "clip-tiny-shapes"
    assert vlmzoo.resolve_config(resolved) == resolved  # a resolved config resolves to itself


def test_pretraining_flops_sums_the_towers_of_from_slots(cache_dir):
    assert pretraining.pretraining_flops("llava-1.5-tiny") == 0
    vision = pretraining.pretraining_flops({**vlmzoo.load_config("llava-1.5-tiny"), "vision": {"from": "clip-test"}})
    both = pretraining.pretraining_flops({**vlmzoo.load_config("llava-1.5-tiny"), "vision": {"from": "clip-test"},
                                     "llm": {"from": "lm-test"}})
    clip = vlmzoo.pretrain("clip-tiny", "shapes", 2, task_sizes=TINY, progress=False)
    assert vision == clip.pretraining_flops == 2 * 128 * json.loads(
        (clip.cache_folder / cache.ENTRY_FILE).read_text())["flops_per_example"]
    assert both > vision > 0


def test_recall_at_k_on_a_small_case():
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.3, 0.5, 0.2]])
    positives = torch.eye(3, dtype=torch.bool)
    recall = pretraining.recall_at_k(similarity, positives, ks=(1, 2, 3))
    assert recall == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    positives[2, 1] = True  # items with equal captions are positives of each other
    assert pretraining.recall_at_k(similarity, positives, ks=(1,))[1] == pytest.approx(2 / 3)


def test_the_pretrained_recipe_trains_the_abstractor_on_captions_then_adds_the_llm(cache_dir):
    config = {**vlmzoo.load_config("llava-1.5-tiny"), "vision": {"from": "clip-test"}}
    recipe = recipe_for(vlmzoo.resolve_config(config))
    assert recipe.name == "pretrained" and recipe_for(vlmzoo.resolve_config("llava-1.5-tiny")).name == "scratch"
    plan = stage_plan(recipe, 20)
    assert [(r.trainable, r.caption_fraction, steps) for r, steps in plan] == [
        (("abstractor",), 1.0, 3), (("abstractor", "llm"), 0.25, 17)]
    task = make_task("shapes", n_train=32, n_val=0, n_test=4)
    model = model_for_task(config, task)
    vision = {k: p.detach().clone() for k, p in model.named_parameters("vision")}
    result = train(model, task, 4, batch_size=4, progress=False)
    assert [s["trainable"] for s in result.extra["stages"]] == [["abstractor"], ["abstractor", "llm"]]
    assert result.steps == 4 and len(result.losses) == 4
    assert all(torch.equal(p, vision[k]) for k, p in model.named_parameters("vision"))  # the tower stays frozen


def test_the_cli_parses_pretrain():
    args = build_parser().parse_args(["pretrain", "siglip-tiny", "--task", "digits", "--budget", "40", "--seed", "2"])
    assert (args.config, args.task, args.budget, args.seed, args.tower) == ("siglip-tiny", "digits", "40", 2, None)
    assert build_parser().parse_args(["pretrain", "--tower", "clip-tiny-shapes"]).tower == "clip-tiny-shapes"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--tower", "clip-huge"])
