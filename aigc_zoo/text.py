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

`GraphTokenizer` applies the same rules inside a TensorFlow graph (`tf.strings` and a
`tf.lookup.StaticHashTable` of the vocabulary), with the same three errors as graph
assertions: the training pipeline tokenises captions with it and the exported SavedModel
takes string prompts through it. `holds_phrase` / `GraphTokenizer.holds_phrase` decide which
training captions a text model's `held_out_combinations` drop.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np
import tensorflow as tf

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


def holds_phrase(caption: str, phrases: Sequence[str]) -> bool:
    """Whether `caption` holds one of `phrases` as a run of whole words, under the module's
    rules ("a small red circle" holds "red circle", not "red" + "circle" apart, nor "red
    circles")."""
    padded = f" {' '.join(words(caption))} "
    return any(f" {' '.join(words(phrase))} " in padded for phrase in phrases)


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

    def encodes(self, prompt: str) -> bool:
        """Whether `encode` takes `prompt` (words all known, neither empty nor too long)."""
        found = words(prompt)
        return 0 < len(found) <= self.max_length and all(word in self._ids for word in found)

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
        saved = files.read_json(path, remedy="the run's tokenizer is missing or damaged; train "
                                "again with --overwrite")
        saved = saved if isinstance(saved, dict) else {}
        vocabulary, length = saved.get("vocabulary"), saved.get("max_length")
        if not (saved.get("format") == FORMAT and isinstance(vocabulary, list)
                and vocabulary[:2] == [PAD, NULL]
                and all(isinstance(w, str) and words(w) == [w] for w in vocabulary[2:])
                and len(set(vocabulary)) == len(vocabulary)
                and isinstance(length, int) and not isinstance(length, bool) and length >= 1):
            raise UserError(f"{path} is not a tokenizer of format {FORMAT} (vocabulary starting "
                            f"{PAD!r}, {NULL!r}, then unique words; max_length >= 1); "
                            "train again with --overwrite")
        return cls(vocabulary[2:], length)


def _graph_text(prompts: tf.Tensor) -> tf.Tensor:
    """Strings with the module's rules applied: lower-case words separated by single spaces.

    RE2 (TensorFlow's regex engine) has no lookaround, so the word pattern is applied in
    steps: every character that is neither a letter, a digit, a hyphen nor an apostrophe
    separates; so does a run of two or more hyphens or apostrophes, and a single one at the
    start or end of a word. What is left is `words`' words (a test compares the two)."""
    text = tf.strings.lower(prompts, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"[^\p{L}\p{N}'-]+", " ")
    text = tf.strings.regex_replace(text, r"['-]{2,}", " ")
    text = tf.strings.regex_replace(text, r"(^|\s)['-]", " ")
    text = tf.strings.regex_replace(text, r"['-](\s|$)", " ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


class GraphTokenizer(tf.Module):
    """`Tokenizer.encode` as TensorFlow ops: string prompts [N] to int32 [N, max_length].

    An empty prompt, an unknown word or a prompt of more than `max_length` words fails a graph
    assertion (`tf.errors.InvalidArgumentError`) whose message is the tokenizer's, with the
    offending prompts or words. A `tf.Module`, so a SavedModel tracks its lookup table.

    Args:
        tokenizer: the `Tokenizer` whose vocabulary and length it uses.
    """

    def __init__(self, tokenizer: Tokenizer):
        super().__init__(name="tokenizer")
        self.max_length = tokenizer.max_length
        self.size = tokenizer.size
        self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(tokenizer.vocabulary[2:], tf.string),
            tf.range(2, tokenizer.size, dtype=tf.int64)), default_value=-1)
        known = ", ".join(tokenizer.vocabulary[2:12])
        self._unknown = (f"in a prompt: the model knows the {tokenizer.size - 2} words of its "
                         f"training captions ({known}, ...)")

    def __call__(self, prompts: tf.Tensor) -> tf.Tensor:
        prompts = tf.reshape(tf.convert_to_tensor(prompts, tf.string), [-1])
        found = tf.strings.split(_graph_text(prompts))
        ids = tf.ragged.map_flat_values(self.table.lookup, found)
        lengths = found.row_lengths()
        unknown = tf.equal(ids.flat_values, -1)
        checks = [
            tf.debugging.Assert(tf.reduce_all(lengths > 0), [
                "empty prompt:", tf.boolean_mask(prompts, tf.equal(lengths, 0)),
                ": write at least one word"]),
            tf.debugging.Assert(tf.reduce_all(lengths <= self.max_length), [
                "prompt", tf.boolean_mask(prompts, lengths > self.max_length),
                f"has more than the {self.max_length} words this model was trained with"]),
            tf.debugging.Assert(tf.logical_not(tf.reduce_any(unknown)), [
                "unknown word", tf.boolean_mask(found.flat_values, unknown), self._unknown])]
        with tf.control_dependencies(checks):
            tokens = ids.to_tensor(default_value=0, shape=[None, self.max_length])
            return tf.cast(tokens, tf.int32)

    @staticmethod
    def holds_phrase(captions: tf.Tensor, phrases: Sequence[str]) -> tf.Tensor:
        """`holds_phrase` of each string of `captions` (bool, the same shape)."""
        joined = "|".join(" ".join(re.escape(word) for word in words(phrase))
                          for phrase in phrases)
        padded = tf.strings.join([" ", _graph_text(captions), " "])
        return tf.strings.regex_full_match(padded, f".* (?:{joined}) .*")


def load_for(folder: str, config: Any) -> Tokenizer:
    """The tokenizer a text model's run saved in `folder`, checked against the run's config
    (`text_vocabulary_size`, `text_max_length`); a `UserError` naming the file when it is
    missing, damaged or not the one the model was built with."""
    tokenizer = Tokenizer.load(folder)
    expected = (config.text_vocabulary_size, config.text_max_length)
    if (tokenizer.size, tokenizer.max_length) != expected:
        raise UserError(f"{os.path.join(folder, FILE)} has {tokenizer.size} tokens of up to "
                        f"{tokenizer.max_length} a prompt, but the run's config.json says "
                        f"{expected[0]} and {expected[1]}: the file is not this run's "
                        "tokenizer; train again with --overwrite")
    return tokenizer
