"""Tests for the tokenizer (`aigc_zoo.text`), the text encoder (`models.text_encoder`) and
captions of a folder dataset (`local.load_folder_captions`)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from aigc_zoo import data, text
from aigc_zoo.data import local, shapes
from aigc_zoo.errors import UserError
from aigc_zoo.models import text_encoder


@pytest.fixture(scope="module")
def tokenizer():
    return text.Tokenizer.build(shapes.render(300, seed=0)[3])


def test_words_lower_case_and_drop_punctuation():
    assert text.words("A small, RED circle!  (left-leaning) isn't") == [
        "a", "small", "red", "circle", "left-leaning", "isn't"]
    assert text.words(" ,.;- ") == [] and text.words("two  --  words") == ["two", "words"]


def test_round_trip_and_order(tokenizer):
    captions = shapes.render(300, seed=0)[3]
    tokens = tokenizer.encode(captions)
    assert tokens.shape == (300, tokenizer.max_length) and tokens.dtype == np.int32
    assert [tokenizer.decode(row) for row in tokens] == captions
    # The longest caption fills the length; the vocabulary is sorted words after the specials.
    assert (tokens > 0).sum(1).max() == tokenizer.max_length == 12
    assert tokenizer.vocabulary[:2] == (text.PAD, text.NULL)
    assert list(tokenizer.vocabulary[2:]) == sorted(tokenizer.vocabulary[2:])
    assert text.Tokenizer.build(reversed(captions)).vocabulary == tokenizer.vocabulary
    assert tokenizer.decode(tokenizer.encode(["A  Small RED circle, on the LEFT."])[0]) == \
        "a small red circle on the left"
    null = tokenizer.null_tokens(2)
    assert (null[:, 0] == 1).all() and (null[:, 1:] == 0).all() and tokenizer.decode(null[0]) == ""


def test_saved_vocabulary(tokenizer, tmp_path):
    tokenizer.save(str(tmp_path))
    saved = json.loads((tmp_path / text.FILE).read_text())
    assert saved == {"format": 1, "max_length": 12, "vocabulary": list(tokenizer.vocabulary)}
    loaded = text.Tokenizer.load(str(tmp_path))
    assert loaded.vocabulary == tokenizer.vocabulary and loaded.max_length == 12
    (tmp_path / text.FILE).write_text(json.dumps({**saved, "vocabulary": ["a", "b"]}))
    with pytest.raises(UserError, match="not a tokenizer"):
        text.Tokenizer.load(str(tmp_path))
    with pytest.raises(UserError, match="cannot read"):
        text.Tokenizer.load(str(tmp_path / "missing"))


@pytest.mark.parametrize("prompt, fragment", [
    ("a small purple circle", "unknown word 'purple'"),
    ("", "empty prompt"),
    ("?!", "empty prompt"),
    ("a small red circle to the left of a large blue square at the top",
     "has 15 words, more than the 12"),
])
def test_bad_prompts_are_one_line_errors(tokenizer, prompt, fragment):
    with pytest.raises(UserError) as error:
        tokenizer.encode(["a red circle", prompt])
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_build_checks_its_inputs():
    with pytest.raises(UserError, match="no words"):
        text.Tokenizer.build(["", "!"])
    with pytest.raises(UserError, match="shorter than the longest"):
        text.Tokenizer.build(["one two three"], max_length=2)
    assert text.Tokenizer.build(["one two"], max_length=5).max_length == 5


def test_text_encoder_masks_padding_and_sees_the_prompt(tokenizer):
    encoder = text_encoder.TextEncoder(tokenizer.size, tokenizer.max_length, width=16, layers=2,
                                       heads=2)
    tokens = tokenizer.encode(["a small red circle on the left", "a small red circle on the right",
                               "a large blue square above a small red circle"])
    features, mask = encoder(tf.constant(tokens))
    assert features.shape == (3, 12, 16)
    np.testing.assert_array_equal(mask.numpy(), tokens > 0)
    # A different last word changes every kept position (attention mixes the prompt).
    assert np.abs(features[0, :7] - features[1, :7]).max(axis=-1).min() > 1e-4
    # Padding is never attended to: the kept positions do not depend on what the pads hold
    # (here: a changed embedding of the padding token).
    table = encoder.tokens.embeddings
    table.assign(tf.tensor_scatter_nd_update(table, [[0]], tf.fill([1, 16], 3.0)))
    again, _ = encoder(tf.constant(tokens))
    np.testing.assert_allclose(again[0, :7], features[0, :7], rtol=1e-5, atol=1e-5)
    assert np.abs(again[0, 7:] - features[0, 7:]).max() > 0.1
    # The null prompt encodes to one kept position.
    null_features, null_mask = encoder(text_encoder.null_prompts(2, tokenizer.max_length))
    assert null_mask.numpy().sum(1).tolist() == [1, 1] and np.isfinite(null_features).all()
    restored = text_encoder.TextEncoder.from_config(encoder.get_config())
    assert restored.get_config() == encoder.get_config()


def test_drop_prompts_replaces_whole_rows(tokenizer):
    tokens = tf.constant(tokenizer.encode(["a small red circle on the left"] * 200))
    seed = tf.constant([3, 4])
    assert text_encoder.drop_prompts(tokens, 0.0, seed) is tokens
    dropped = text_encoder.drop_prompts(tokens, 0.25, seed).numpy()
    null = tokenizer.null_tokens(1)[0]
    is_null = (dropped == null).all(1)
    assert ((dropped == tokens.numpy()).all(1) | is_null).all()
    assert 0.15 < is_null.mean() < 0.35
    np.testing.assert_array_equal(text_encoder.drop_prompts(tokens, 0.25, seed), dropped)
    np.testing.assert_array_equal(text_encoder.null_prompts(1, tokenizer.max_length)[0], null)


def _folder(root, names):
    root.mkdir()
    for name in names:
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(root / name)
    return root


def test_folder_captions_from_a_sidecar_or_text_files(tmp_path):
    sidecar = _folder(tmp_path / "sidecar", ["b.png", "a.png"])
    (sidecar / "captions.jsonl").write_text(
        json.dumps({"file": "b.png", "caption": "a bee"}) + "\n\n"
        + json.dumps({"file": "a.png", "caption": " an ant "}) + "\n")
    assert local.load_folder_captions(sidecar, "train") == ["an ant", "a bee"]
    dataset, info = data.open_captioned(f"folder:{sidecar}", "train", image_size=8)
    assert [ex["caption"] for ex in dataset.as_numpy_iterator()] == [b"an ant", b"a bee"]
    assert info.num_examples == 2 and data.captions(f"folder:{sidecar}", "train") == [
        "an ant", "a bee"]
    texts = _folder(tmp_path / "texts", ["x.png", "y.png"])
    (texts / "x.txt").write_text("an x\n")
    with pytest.raises(UserError, match=r"no caption for .*y.png"):
        local.load_folder_captions(texts, "train")
    (texts / "y.txt").write_text("  ")
    with pytest.raises(UserError, match=r"an empty caption for .*y.png"):
        local.load_folder_captions(texts, "train")
    (texts / "y.txt").write_text("a y")
    assert local.load_folder_captions(texts, "train") == ["an x", "a y"]
    (sidecar / "captions.jsonl").write_text("[1, 2]\n")
    with pytest.raises(UserError, match=r"captions.jsonl:1: expected a JSON object"):
        local.load_folder_captions(sidecar, "train")
    with pytest.raises(UserError, match="has no captions"):
        data.open_captioned("ring8", "train")


def test_the_graph_tokenizer_follows_the_same_rules(tokenizer):
    tricky = ["A small, RED circle!  (left-leaning) isn't", " ,.;- ", "two  --  words",
              "-x- 'y' z'-w a_b Éclair ÜBER 3rd", "a-'b x'y-z", "--a", "a -b c- d"]
    normalised = text._graph_text(tf.constant(tricky)).numpy()
    assert [t.decode() for t in normalised] == [" ".join(text.words(t)) for t in tricky]
    prompts = ["A small, RED circle on the LEFT.", "a large blue square"]
    np.testing.assert_array_equal(text.GraphTokenizer(tokenizer)(tf.constant(prompts)),
                                  tokenizer.encode(prompts))
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown word"):
        text.GraphTokenizer(tokenizer)(tf.constant(["a purple circle"]))
