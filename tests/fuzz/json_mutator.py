"""Structure-aware mutation of JSON documents: edits a parsed tree (replace, delete, insert, swap,
numeric nudges, values borrowed from elsewhere in the tree or from a dictionary of the keys and
strings the seeds use), then serialises it, now and then with byte-level damage on top.
A pure-Python mutation makes mostly *valid* JSON, which reaches the config checks past the parser."""
from __future__ import annotations

import json
import random
from typing import Any, Iterator

# Edge values for sizes and ids: zero, signs, the int32/int64/double limits and just past them.
NUMBERS: list[Any] = [0, 1, -1, 2, 3, 7, 8, 9, 16, 31, 64, 255, 256, 1023, 4096, 65535, 65536, 2**31 - 1, 2**31,
                      -(2**31), -(2**31) - 1, 2**32, 2**32 + 8, 2**32 + 512, 2**53 + 1, 2**63 - 1, 2**63, -(2**63),
                      2**64, 10**30, 0.0, -0.0, 0.5, -0.5, 1.5, 3.0, 1e-300, 5e-324, 1e300, -1e300, 1e-5, 2.5e9]
STRINGS = ["", " ", "x", "null", "true", "0", "-1", "1e9", "\u0000", "\u00e9", "\ud7ff", "a" * 300, "default", "None"]
DEEP = 20000  # nesting of the deep-structure edit: past any recursive reader's comfort


def words(tree: Any, out: set[str] | None = None) -> set[str]:
    """Every key and string value in a tree: the dictionary the mutator borrows from."""
    out = set() if out is None else out
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.add(k)
            words(v, out)
    elif isinstance(tree, list):
        for v in tree:
            words(v, out)
    elif isinstance(tree, str):
        out.add(tree)
    return out


def _nodes(tree: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _nodes(v, path + (i,))


def _set(tree: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return tree


class JsonMutator:
    def __init__(self, dictionary: set[str] | list[str], rng: random.Random):
        self.dictionary = sorted(dictionary) + STRINGS
        self.rng = rng

    # ---- values
    def scalar(self) -> Any:
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(NUMBERS)
        if r < 0.8:
            return self.rng.choice(self.dictionary)
        return self.rng.choice([None, True, False, [], {}, float("nan"), float("inf")])

    def nudge(self, x: int | float) -> Any:
        op = self.rng.randrange(7)
        if op == 0:
            return x + self.rng.choice([-1, 1])
        if op == 1:
            return -x
        if op == 2:
            return x * self.rng.choice([2, 3, 1000, 2**20, 2**32])
        if op == 3:
            return x // 2 if isinstance(x, int) else x / 2
        if op == 4:
            return float(x) + self.rng.choice([0.5, 1e-9])
        if op == 5:
            return [x]
        return str(x)

    # ---- one edit of the tree
    def edit(self, tree: Any) -> Any:
        nodes = list(_nodes(tree))
        path, node = self.rng.choice(nodes)
        op = self.rng.randrange(9)
        if op == 0:  # replace by a scalar
            return _set(tree, path, self.scalar())
        if op == 1 and isinstance(node, (int, float)) and not isinstance(node, bool):
            return _set(tree, path, self.nudge(node))
        if op == 2 and path:  # delete
            parent = tree
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
            return tree
        if op == 3 and isinstance(node, dict):  # a new key, maybe a misspelt one
            key = self.rng.choice(self.dictionary)
            if self.rng.random() < 0.3 and key:
                i = self.rng.randrange(len(key))
                key = key[:i] + key[i + 1 :]
            node[key] = self.scalar() if self.rng.random() < 0.7 else json.loads(json.dumps(self.rng.choice(nodes)[1]))
            return tree
        if op == 4:  # a copy of another subtree (a slot moved into another slot, a list into a number)
            other = json.loads(json.dumps(self.rng.choice(nodes)[1]))
            return _set(tree, path, other)
        if op == 5 and isinstance(node, list):  # grow or shrink a list
            if node and self.rng.random() < 0.5:
                node.pop(self.rng.randrange(len(node)))
            else:
                node.insert(self.rng.randrange(len(node) + 1), self.scalar())
            return tree
        if op == 6 and isinstance(node, str):  # a string edit: case, truncation, a neighbour from the dictionary
            choices = [node.upper(), node[: len(node) // 2], node + node, self.rng.choice(self.dictionary)]
            return _set(tree, path, self.rng.choice(choices))
        if op == 7:  # wrap in a list or an object
            return _set(tree, path, [node] if self.rng.random() < 0.5 else {"value": node})
        return _set(tree, path, self.scalar())

    # ---- whole documents
    def mutate_tree(self, tree: Any, edits: int | None = None) -> Any:
        for _ in range(edits or self.rng.choice([1, 1, 1, 2, 2, 3, 5])):
            tree = self.edit(tree)
        return tree

    def dumps(self, tree: Any) -> str:
        text = json.dumps(tree, indent=self.rng.choice([None, None, 1]), ensure_ascii=self.rng.random() < 0.8)
        r = self.rng.random()
        if r < 0.03:  # deep nesting at a random value position
            at = self.rng.randrange(len(text) + 1)
            text = text[:at] + "[" * DEEP + "1" + "]" * DEEP + text[at:]
        elif r < 0.06:  # a duplicate key: JSON allows it, readers disagree on which wins
            text = text.replace("{", '{"family": "llava", ', 1)
        return text

    def damage(self, data: bytes, max_size: int) -> bytes:
        """Byte-level damage: truncation, a flipped, inserted or deleted byte, a swapped span."""
        data = bytearray(data)
        op = self.rng.randrange(4)
        if not data:
            return bytes([self.rng.randrange(256)])
        i = self.rng.randrange(len(data))
        if op == 0:
            del data[i:]
        elif op == 1:
            data[i] ^= 1 << self.rng.randrange(8)
        elif op == 2:
            data.insert(i, self.rng.choice(b'{}[]",:0123456789-eE.\\ntf\x00\xff'))
        else:
            j = self.rng.randrange(len(data))
            data[i], data[j] = data[j], data[i]
        return bytes(data[:max_size])
