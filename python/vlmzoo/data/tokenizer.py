"""A small word-level tokenizer for the built-in tasks.

The built-in tasks speak a closed vocabulary of a few dozen words, so a word-level
tokenizer keeps the language model's embedding table tiny and every answer a short,
exact token sequence.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
IMAGE_TOKEN = "<image>"
# Fixed ids 0..4 so checkpoints and model code can rely on them without a tokenizer at hand.
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN)

# A special token written literally, a run of letters/digits, or one punctuation mark ("?", ",").
_TOKEN_PATTERN = re.compile(r"<[a-z]+>|\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lowercases `text` and splits it into word and punctuation tokens (strings)."""
    return _TOKEN_PATTERN.findall(text.lower())


class WordTokenizer:
    """Maps words to ids: the five special tokens first, then `words` in the given order."""

    pad_id = SPECIAL_TOKENS.index(PAD_TOKEN)
    bos_id = SPECIAL_TOKENS.index(BOS_TOKEN)
    eos_id = SPECIAL_TOKENS.index(EOS_TOKEN)
    unk_id = SPECIAL_TOKENS.index(UNK_TOKEN)
    image_id = SPECIAL_TOKENS.index(IMAGE_TOKEN)

    def __init__(self, words: Iterable[str]):
        self._id_to_token: list[str] = list(SPECIAL_TOKENS)
        self._token_to_id: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        for word in words:
            if word in SPECIAL_TOKENS:
                raise ValueError(f"WordTokenizer: word {word!r} is a special token; pass only ordinary words")
            if split_words(word) != [word]:
                raise ValueError(
                    f"WordTokenizer: word {word!r} is not a single lowercase token "
                    f"(it splits into {split_words(word)})"
                )
            if word not in self._token_to_id:  # repeats are harmless when word lists are concatenated
                self._token_to_id[word] = len(self._id_to_token)
                self._id_to_token.append(word)

    def __len__(self) -> int:
        return len(self._id_to_token)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and self._id_to_token == other._id_to_token

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={len(self)})"

    @property
    def words(self) -> list[str]:
        """The ordinary (non-special) words, in id order."""
        return self._id_to_token[len(SPECIAL_TOKENS):]

    def token_to_id(self, token: str) -> int:
        return self._token_to_id.get(token, self.unk_id)

    def id_to_token(self, token_id: int) -> str:
        # Model heads are often rounded up past the vocabulary; ids beyond it read as <unk>.
        if 0 <= token_id < len(self._id_to_token):
            return self._id_to_token[token_id]
        return UNK_TOKEN

    def covers(self, text: str) -> bool:
        """True when every token of `text` is in the vocabulary (nothing becomes <unk>)."""
        return all(t in self._token_to_id for t in split_words(text))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without <bos>/<eos>; unknown words become unk_id."""
        return [self._token_to_id.get(t, self.unk_id) for t in split_words(text)]

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Space-joined tokens of `ids`; skip_special drops <pad>, <bos>, <eos> and <image> but never <unk>
        (an unknown word or an id past the vocabulary stays visible rather than vanishing)."""
        tokens = (self.id_to_token(int(i)) for i in ids)
        if skip_special:
            tokens = (t for t in tokens if t not in SPECIAL_TOKENS or t == UNK_TOKEN)
        return " ".join(tokens)

    def to_dict(self) -> dict:
        """A JSON-serialisable description, stored next to checkpoints."""
        return {"type": "WordTokenizer", "special_tokens": list(SPECIAL_TOKENS), "words": self.words}

    @classmethod
    def from_dict(cls, data: dict) -> "WordTokenizer":
        if data.get("type") != "WordTokenizer":
            raise ValueError(f"WordTokenizer.from_dict: expected type 'WordTokenizer', got {data.get('type')!r}")
        if list(data.get("special_tokens", [])) != list(SPECIAL_TOKENS):
            raise ValueError(
                f"WordTokenizer.from_dict: expected special_tokens {list(SPECIAL_TOKENS)}, "
                f"got {data.get('special_tokens')!r}"
            )
        return cls(data["words"])
