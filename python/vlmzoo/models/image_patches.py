"""Fuyu's call: image patches instead of pixel values, in both forms transformers' FuyuProcessor has
returned. Transformers 5.x gives every patch of the batch concatenated, [total patches, patch width], in
the order of the image placeholders they fill (and calls them `pixel_values` since 5.23); older versions
give per-sample patches (a list of [1, P, patch width], or [batch, P, patch width]) with
`image_patches_indices` [batch, tokens]: the patch of that row each position takes, -1 where the token
keeps its word embedding (text, and the newline closing each row of patches).

Both become the 5.x form here, which the C++ core splices at the image placeholders (fusion "splice")."""
from __future__ import annotations

from typing import Any, Sequence

import torch


def _row_patches(image_patches: Any, row: int, rows: int) -> torch.Tensor:
    """Row `row`'s patches [P, patch width] from a list per row or a [batch, P, width] tensor."""
    if isinstance(image_patches, torch.Tensor):
        if image_patches.dim() != 3 or image_patches.size(0) != rows:
            raise ValueError(f"image_patches: with image_patches_indices, expected [batch {rows}, patches, patch width] "
                             f"or a list of {rows} tensors, got shape {tuple(image_patches.shape)}")
        return image_patches[row]
    if len(image_patches) != rows:
        raise ValueError(f"image_patches: {len(image_patches)} entries for {rows} rows of input_ids")
    patches = image_patches[row]
    if isinstance(patches, (list, tuple)):  # [[image patches, ...], ...]: a row's images in order
        patches = torch.cat([p.reshape(-1, p.shape[-1]) for p in patches], 0) if patches else None
    if patches is None:
        return torch.zeros(0, 0)
    return patches.reshape(-1, patches.shape[-1])


def concatenated_patches(input_ids: torch.Tensor, image_patches: Any, image_patches_indices: torch.Tensor | None,
                         image_token_id: int, patch_width: int | None = None) -> torch.Tensor:
    """[total patches, patch width], the patches in the order of the image placeholders of input_ids.

    Patches of another width than `patch_width` (when given), and a count that disagrees with the
    placeholders, are ValueErrors naming both."""
    placeholders = input_ids == image_token_id
    for patches in _flatten(image_patches) if isinstance(image_patches, (list, tuple)) else [image_patches]:
        if not isinstance(patches, torch.Tensor):
            raise TypeError(f"image_patches: expected torch.Tensors, got {type(patches).__name__}")
        if patch_width is not None and (patches.dim() == 0 or patches.shape[-1] != patch_width):
            raise ValueError(f"image_patches: each patch must hold vision.patch_size^2 x vision.channels = "
                             f"{patch_width} values, got shape {tuple(patches.shape)}")
    if image_patches_indices is None:
        if isinstance(image_patches, (list, tuple)):
            parts = [p.reshape(-1, p.shape[-1]) for p in _flatten(image_patches)]
            image_patches = torch.cat(parts, 0) if parts else None
            if image_patches is None:
                raise ValueError("image_patches: an empty list")
        if not isinstance(image_patches, torch.Tensor):
            raise TypeError(f"image_patches: expected a torch.Tensor or a list of them, got {type(image_patches).__name__}")
        patches = image_patches.reshape(-1, image_patches.shape[-1]) if image_patches.dim() == 3 else image_patches
        if patches.dim() == 2 and int(placeholders.sum()) != patches.size(0):
            raise ValueError(f"input_ids hold {int(placeholders.sum())} image placeholders (fusion.image_token_id "
                             f"{image_token_id}) but image_patches give {patches.size(0)} patches")
        return image_patches
    indices = torch.as_tensor(image_patches_indices)
    if indices.shape != input_ids.shape:
        raise ValueError(f"image_patches_indices: expected the shape of input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(indices.shape)}")
    rows = input_ids.size(0)
    gathered = []
    for row in range(rows):
        marked = indices[row] >= 0
        if not torch.equal(marked, placeholders[row]):
            raise ValueError(f"image_patches_indices: row {row} names a patch at {int(marked.sum())} positions but "
                             f"input_ids hold {int(placeholders[row].sum())} image placeholders (fusion.image_token_id "
                             f"{image_token_id}) there; they must be the same positions")
        wanted = indices[row][marked].long()
        if wanted.numel() == 0:
            continue
        patches = _row_patches(image_patches, row, rows)
        if int(wanted.max()) >= patches.size(0):
            raise ValueError(f"image_patches_indices: row {row} names patch {int(wanted.max())} but image_patches give "
                             f"that row {patches.size(0)} patches (more image placeholders than patches)")
        gathered.append(patches[wanted])
    if not gathered:
        raise ValueError("image_patches_indices: no position names a patch, but image_patches were given")
    return torch.cat(gathered, 0)


def _flatten(items: Sequence[Any]) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, (list, tuple)) else [item])
    return out
