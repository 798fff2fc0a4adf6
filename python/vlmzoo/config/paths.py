"""Why a path a user gave is not there: the deepest part of it that exists and what stops the rest
(a missing name, with the names beside it that come close, or a file where a folder was needed)."""
from __future__ import annotations

import difflib
from pathlib import Path

PATH_MARKS = ("/", "\\", "~", ".")


def looks_like_path(text: str) -> bool:
    """A string a user meant as a path rather than a preset or task name: it has a separator, starts
    with ~ or . (./x, ../x), or names a .json file. ("llava-1.5-tiny" has a dot inside and is a name.)"""
    return "/" in text or "\\" in text or text.startswith(("~", ".")) or text.lower().endswith(".json")


def _close_names(folder: Path, name: str) -> list[str]:
    try:
        names = [child.name for child in folder.iterdir()]
    except OSError:
        return []
    return difflib.get_close_matches(name, names, n=3, cutoff=0.6)


def why_missing(path: str | Path) -> str:
    """One clause saying why `path` does not exist: which part exists, what is missing or is a file."""
    path = Path(path).expanduser()
    parts = path.parts
    for depth in range(1, len(parts) + 1):
        here = Path(*parts[:depth])
        if here.exists():
            if depth < len(parts) and not here.is_dir():
                return f"{str(here)!r} is a file, not a folder"
            continue
        parent = Path(*parts[:depth - 1]) if depth > 1 else Path(".")
        close = _close_names(parent, parts[depth - 1])
        hint = f" (close: {', '.join(map(repr, close))})" if close else ""
        where = f"folder {str(parent.resolve())!r}" if depth > 1 or not path.is_absolute() else "the file system root"
        return f"the {where} has no {parts[depth - 1]!r}{hint}"
    return f"{str(path)!r} exists"


def folder_problem(path: str | Path, what: str = "checkpoint folder") -> str | None:
    """None when `path` is a folder, else what is wrong with it, for an error message."""
    path = Path(path).expanduser()
    if path.is_dir():
        return None
    if path.exists():
        return (f"{what} {str(path)!r} is a file, not a folder; give the folder that holds it "
                f"({str(path.resolve().parent)!r})")
    return f"{what} {str(path)!r} does not exist: {why_missing(path)}"
