"""A word-level tokenizer built from a dataset's training captions, and the checks of prompts.

    tokenizer = text.Tokenizer.build(data.captions("shapes", "train"))
    tokens = tokenizer.encode(["a small red circle"])   # int32 [1, max_length]
    tokenizer.save(workdir)                             # workdir/tokenizer.json
    text.Tokenizer.load(workdir).decode(tokens[0])      # "a small red circle"

Rules (the same for captions and prompts): lower-case; every run of characters that are not
letters, digits or a hyphen or apostrophe between letters separates words, so punctuation
and spacing do not matter ("A small, red circle!" is "a small red circle"); a word that is
not in the vocabulary is an error, as are an empty prompt and one longer than `max_length`
words (the longest training caption, unless built with a larger one). A word-level vocabulary
is small and exact for captions drawn from a few hundred words, and its errors name the word.

Token 0 pads; token 1 is the null prompt of classifier-free guidance (`null_tokens`: the
null token, then padding), which no prompt encodes to.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Iterable, Sequence

import numpy as np

from aigc_zoo import files
from aigc_zoo.errors import UserError

PAD, NULL = "<pad>", "<null>"
FILE = "tokenizer.json"
FORMAT = 1
# Letters and digits, with single hyphens or apostrophes inside a word ("left-leaning").
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def words(text: str) -> list[str]:
    """The words of `text` under the module's rules."""
    return _WORD.findall(text.lower())


class Tokenizer:
    """Words to token ids and back, over a fixed vocabulary.

    Args:
        vocabulary: the words, in id order from 2 (0 pads, 1 is the null prompt).
        max_length: the most words a prompt may have (the length of every encoding).
    """

    def __init__(self, vocabulary: Sequence[str], max_length: int):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.vocabulary = (PAD, NULL, *vocabulary)
        self.max_length = int(max_length)
        self._ids = {word: i for i, word in enumerate(self.vocabulary)}
        if len(self._ids) != len(self.vocabulary):
            raise ValueError("the vocabulary repeats a word")

    @classmethod
    def build(cls, captions: Iterable[str], *, max_length: int | None = None) -> Tokenizer:
        """The tokenizer of every word in `captions` (sorted: the same for the same set of
        captions in any order); `max_length` defaults to the longest caption's."""
        counts: collections.Counter = collections.Counter()
        longest = 0
        for caption in captions:
            found = words(caption)
            counts.update(found)
            longest = max(longest, len(found))
        if not counts:
            raise UserError("no words in the training captions to build a tokenizer from")
        if max_length is not None and max_length < longest:
            raise UserError(f"max_length={max_length} is shorter than the longest training "
                            f"caption ({longest} words)")
        return cls(sorted(counts), max_length or longest)

    @property
    def size(self) -> int:
        """Token ids are in [0, size)."""
        return len(self.vocabulary)

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """int32 [len(prompts), max_length] token ids, padded with 0; a `UserError` in one line
        for an empty prompt, an unknown word or a prompt longer than `max_length` words."""
        rows = np.zeros((len(prompts), self.max_length), np.int32)
        for row, prompt in zip(rows, prompts):
            found = words(prompt)
            if not found:
                raise UserError(f"empty prompt {prompt!r}: write at least one word")
            if len(found) > self.max_length:
                raise UserError(f"prompt {prompt!r} has {len(found)} words, more than the "
                                f"{self.max_length} this model was trained with")
            unknown = [word for word in found if word not in self._ids]
            if unknown:
                known = ", ".join(self.vocabulary[2:12])
                raise UserError(f"unknown word {unknown[0]!r} in prompt {prompt!r}: the model "
                                f"knows the {self.size - 2} words of its training captions "
                                f"({known}, ...)")
            row[:len(found)] = [self._ids[word] for word in found]
        return rows

    def decode(self, tokens: Sequence[int]) -> str:
        """The words of one row of token ids, padding dropped; "" for the null prompt."""
        return " ".join(self.vocabulary[int(t)] for t in tokens if int(t) > 1)

    def null_tokens(self, count: int) -> np.ndarray:
        """int32 [count, max_length]: the null prompt (the unconditional branch)."""
        rows = np.zeros((count, self.max_length), np.int32)
        rows[:, 0] = self._ids[NULL]
        return rows

    def save(self, folder: str) -> None:
        """Write `folder/tokenizer.json` (the vocabulary, in id order, and `max_length`)."""
        files.write_json(os.path.join(folder, FILE), {
            "format": FORMAT, "max_length": self.max_length, "vocabulary": list(self.vocabulary)})

    @classmethod
    def load(cls, folder: str) -> Tokenizer:
        """The tokenizer saved in `folder`; a `UserError` for a missing or damaged file."""
        path = os.path.join(folder, FILE)
        saved = files.read_json(path, remedy="the run's tokenizer is missing or damaged")
        saved = saved if isinstance(saved, dict) else {}
        vocabulary, length = saved.get("vocabulary"), saved.get("max_length")
        if not (saved.get("format") == FORMAT and isinstance(vocabulary, list)
                and vocabulary[:2] == [PAD, NULL]
                and all(isinstance(w, str) and words(w) == [w] for w in vocabulary[2:])
                and len(set(vocabulary)) == len(vocabulary)
                and isinstance(length, int) and not isinstance(length, bool) and length >= 1):
            raise UserError(f"{path} is not a tokenizer of format {FORMAT} (vocabulary starting "
                            f"{PAD!r}, {NULL!r}, then unique words; max_length >= 1)")
        return cls(vocabulary[2:], length)
