"""`vlmzoo.from_pretrained`: a model from a checkpoint folder, vlmzoo's own or a Hugging Face one.
The model is built without drawing random weights (they are about to be overwritten), in the
requested dtype, then the checkpoint is checked whole (names, shapes, finiteness) and copied in."""
from __future__ import annotations

from pathlib import Path

import torch

from vlmzoo.config.paths import folder_problem
from vlmzoo.config.sources import HUB_ID
from vlmzoo.models.checkpoint import VLMZOO_CONFIG, read_json_object, read_safetensors_folder
from vlmzoo.families.config_fields import explain_layer_mismatch
from vlmzoo.families.registry import converter_for, folder_layout, folder_loader
from vlmzoo.models.validate import check_finite
from vlmzoo.models.model import Model


def _float_tensors(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _load_hf(folder: Path, dtype: torch.dtype | None) -> Model:
    hf_config = read_json_object(folder / "config.json")
    model_type = hf_config.get("model_type")
    convert = converter_for(model_type, str(folder / "config.json"))
    tensors = read_safetensors_folder(folder)
    # Named as the file names them, before conversion renames, splits or fuses them.
    check_finite(tensors, f"{folder}: checkpoint tensors hold")
    config, mapped, unknown = convert(hf_config, tensors)
    return _load_converted(config, mapped, unknown, dtype, f"Hugging Face {model_type}", hf_config,
                           str(folder / "config.json"))


def _load_converted(config: dict, mapped: dict[str, torch.Tensor], unknown: list[str], dtype: torch.dtype | None,
                    what: str, hf_config: dict | None = None, config_path: str = "config.json") -> Model:
    """The model of a converted checkpoint, every weight checked (missing, unexpected) before any is copied;
    a layer count that differs from the weights' is said as such (and a misspelled config field named)."""
    model = Model(config, dtype=dtype, initialize=False)
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(unknown + [k for k in mapped if k not in own])
    if missing or unexpected:
        layers = explain_layer_mismatch(hf_config or {}, own, list(mapped) + unknown, config_path)
        if layers is not None:
            raise ValueError(f"{layers} ({len(missing)} weights missing, {len(unexpected)} unexpected)")
        parts = []
        if missing:
            parts.append(f"missing weights ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected weights ({len(unexpected)}): {', '.join(unexpected)}")
        raise KeyError(f"{what} checkpoint does not match its config: " + "; ".join(parts))
    model.load_state_dict(_float_tensors(mapped, model.dtype))
    return model


def download(repo_id: str, revision: str | None = None) -> Path:
    """The Hub id's snapshot folder: from the huggingface_hub cache, downloaded first when it is not there
    (its offline mode, HF_HUB_OFFLINE=1, forbids that: then an uncached id is an error naming it)."""
    try:  # inside: huggingface_hub is optional (the reference extra), needed for Hub ids only
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise ImportError(f"{repo_id!r} looks like a Hub id, which needs huggingface_hub "
                          "(pip install 'vlmzoo[reference]')") from error
    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except Exception as error:  # offline and not cached, unknown repo, no network
        at = f" at revision {revision!r}" if revision else ""
        raise FileNotFoundError(f"Hub id {repo_id!r}{at}: not in the huggingface_hub cache and not downloadable "
                                f"here ({type(error).__name__}: {error})") from error


def local_folder(target: str | Path, revision: str | None = None) -> Path:
    """A checkpoint folder: `target` itself, or a Hub id's snapshot (downloaded when needed)."""
    path = Path(target)
    if path.is_dir():
        return path
    if isinstance(target, str) and HUB_ID.match(target) and not path.exists():
        return download(target, revision)
    raise FileNotFoundError(folder_problem(path))


def from_pretrained(folder: str | Path, dtype: torch.dtype | None = None, revision: str | None = None) -> Model:
    """A model from a checkpoint folder or a Hugging Face Hub id ("owner/name", `revision` pinning a commit,
    branch or tag; read through the huggingface_hub cache, downloaded when absent and not offline): vlmzoo's
    own (vlmzoo_config.json), or a Hugging Face one
    (config.json + safetensors, sharded too, or pytorch_model.bin loaded without unpickling code).
    Missing or unexpected weights raise a KeyError naming them; dtype builds the model in that dtype."""
    folder = local_folder(folder, revision)
    model = _load_folder(folder, dtype)
    model.processor_source = folder  # save_pretrained(format="transformers") writes this folder's processor too
    return model


def _load_folder(folder: Path, dtype: torch.dtype | None) -> Model:
    if (folder / VLMZOO_CONFIG).is_file():
        model = Model(read_json_object(folder / VLMZOO_CONFIG), dtype=dtype, initialize=False)
        model.load_state_dict(_float_tensors(read_safetensors_folder(folder), model.dtype))
        return model
    load = folder_loader(folder)
    if load is not None:  # torchscale's BEiT-3
        return load(folder, dtype)
    layout = folder_layout(folder)
    if layout is not None:  # open_clip's
        config, mapped, unknown = layout(folder)
        check_finite(mapped, f"{folder}: checkpoint tensors hold")
        return _load_converted(config, mapped, unknown, dtype, str(folder))
    if (folder / "config.json").is_file():
        return _load_hf(folder, dtype)
    raise FileNotFoundError(f"{folder}: neither {VLMZOO_CONFIG} nor a Hugging Face config.json")
