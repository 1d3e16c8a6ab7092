"""Prompt agreement (aigc_zoo/metrics/attributes.py): the attribute probe's cache (miss, hit,
damaged), exact scoring against the examples' features, and the agreement of a tiny untrained
text-conditional `ldm` on a tiny `shapes`, in-process."""

import dataclasses
import os
import types

import numpy as np
import pytest

from aigc_zoo import registry, stages, text
from aigc_zoo.data import shapes
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import attributes, classifier, sample_quality

SMALL = {"train": 128, "test": 24}  # 128: one training batch of the probe


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    """A `shapes` with tiny splits (the builder's own splits, rendered the same way)."""
    folder = str(tmp_path_factory.mktemp("shapes"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shapes, "SPLITS", SMALL)
        shapes.Shapes(data_dir=folder).download_and_prepare()
    return folder


def _load(shapes_dir, cache_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attributes, "MIN_TRAIN_STEPS", 2)  # its files matter here, not accuracy
        return attributes.load_probe("shapes", data_dir=shapes_dir, cache_dir=cache_dir,
                                     verbose=False)


@pytest.fixture(scope="module")
def probe_cache(shapes_dir, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("probes"))
    return cache, _load(shapes_dir, cache)


def test_a_probe_is_cached_read_back_and_trained_again_when_damaged(
        probe_cache, shapes_dir, monkeypatch, capsys):
    cache, probe = probe_cache
    assert os.path.basename(probe.path).startswith("shapes-32x32x3-attributes-v1-")
    assert sorted(os.listdir(probe.path)) == [classifier.INFO, classifier.WEIGHTS]
    scores = probe.info["test_scores"]
    assert scores["all"]["count"] == SMALL["test"]
    assert scores["one object"]["count"] + scores["two objects"]["count"] == SMALL["test"]
    assert set(scores["all"]["per_attribute"]) == {
        f"{name}_{slot}" for name in shapes.ATTRIBUTES for slot in (1, 2)}

    # A hit reads the files (info.json adds the weights' digest) and trains nothing.
    monkeypatch.setattr(attributes, "train_probe", lambda *a, **k: pytest.fail("trained"))
    again = _load(shapes_dir, cache)
    assert again.path == probe.path and "weights_sha256" in again.info
    assert {k: v for k, v in again.info.items() if k != "weights_sha256"} == probe.info
    images = np.random.default_rng(0).uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    for name, value in probe.predict(images).items():
        np.testing.assert_array_equal(again.predict(images)[name], value)

    weights = os.path.join(probe.path, classifier.WEIGHTS)
    with open(weights, "r+b") as handle:  # one flipped byte: the digest no longer matches
        handle.seek(os.path.getsize(weights) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    capsys.readouterr()
    # Trained again: the same network stands in for a new training (the cache's handling is
    # what is tested here; `probe_cache` trained one for real).
    monkeypatch.setattr(attributes, "train_probe", lambda *a, **k: (probe.network, probe.info))
    mended = _load(shapes_dir, cache)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"warning: the cached attribute probe {probe.path} was damaged"), lines
    assert "training it again" in lines[0] and mended.path == probe.path
    # A damaged info.json is found by the validation on read as well.
    with open(os.path.join(probe.path, classifier.INFO), "w") as handle:
        handle.write('{"version": 1}')
    assert attributes.classifier.read_files(
        probe.path, lambda saved: attributes._info_problem(
            saved, (32, 32, 3), attributes.dataset_attributes("shapes")))[0] is None


def test_scores_compare_with_the_features_per_group():
    targets = {"shape_1": np.array([0, 1, 2, 3]), "shape_2": np.array([0, 0, 2, 4])}
    predicted = {"shape_1": np.array([0, 1, 0, 3]), "shape_2": np.array([0, 1, 2, 4])}
    blocks = attributes.score("shapes", predicted, targets)
    assert blocks["all"] == {"count": 4, "all_attributes": 0.5,
                             "per_attribute": {"shape_1": 0.75, "shape_2": 0.75}}
    assert blocks["one object"]["all_attributes"] == 0.5  # the second: a shape drawn for none
    assert blocks["two objects"]["per_attribute"] == {"shape_1": 0.5, "shape_2": 1.0}
    # The second object's -1 (none) is class 0 of its heads.
    slot_two = attributes.dataset_attributes("shapes")[4]
    assert slot_two.name == "shape_2" and slot_two.classes[0] == "none"
    np.testing.assert_array_equal(slot_two.targets(np.array([[1, -1], [0, 3]])), [0, 4])
    # A pair is read top or left object first, whichever its caption names first.
    columns = {"shape": np.array([[0, 1], [2, -1], [1, 3]]),
               "position": np.array([[2, 1], [2, -1], [3, 4]])}
    columns.update(colour=columns["shape"] + 1, size=columns["shape"] * 0)
    found = attributes.canonical("shapes", columns)
    np.testing.assert_array_equal(found["shape"], [[1, 0], [2, -1], [1, 3]])
    np.testing.assert_array_equal(found["position"], [[1, 2], [2, -1], [3, 4]])
    np.testing.assert_array_equal(found["colour"], found["shape"] + 1)
    with pytest.raises(UserError, match="no attribute probe.*digits, shapes"):
        attributes.dataset_attributes("mnist")


class _RealImages:
    """A stand-in text model that draws, for each prompt, a real eval image of that caption:
    its agreement must be the probe's accuracy on those very images."""

    config = types.SimpleNamespace(conditioning="text")
    image_shape = (32, 32, 3)
    conditional = False

    def __init__(self, images, captions, tokenizer):
        self.by_prompt = {tuple(t): image for t, image in
                          zip(tokenizer.encode(captions), images)}
        self.calls = []

    @classmethod
    def takes_text(cls, config):
        return config.conditioning == "text"

    def generate(self, n, *, seed, tokens):
        self.calls.append((n, seed))
        return np.stack([self.by_prompt[tuple(t)] for t in tokens])


def test_agreement_of_real_images_is_the_probes_accuracy_and_held_out_is_apart(
        probe_cache, shapes_dir):
    _, probe = probe_cache
    images, targets, captions = attributes.read_split("shapes", "test", data_dir=shapes_dir)
    tokenizer = text.Tokenizer.build(captions)
    phrase = " ".join(text.words(captions[0])[2:4])  # its colour and shape: "red circle"
    agreement = attributes.PromptAgreement(
        "shapes", tokenizer=tokenizer, data_dir=shapes_dir, held_out=(phrase,),
        num_samples=10, batch_size=4, probe=probe)
    # Captions repeat with different images; keep, per caption, the last image.
    model = _RealImages(images, captions, tokenizer)
    chosen = np.array([max(i for i, c in enumerate(captions) if c == captions[j])
                       for j in range(len(captions))])
    results = agreement.evaluate(model, seed=1)
    assert [n for n, _ in model.calls][:3] == [4, 4, 2]  # batch_size at a time
    predicted = probe.predict(images[chosen[:10]])
    expected = attributes.score("shapes", predicted, {k: v[:10] for k, v in targets.items()})
    assert results["test_captions"] == expected
    held = [i for i, c in enumerate(captions) if text.holds_phrase(c, [phrase])]
    assert 0 in held and results["held_out"]["all"]["count"] == min(len(held), 10)
    assert results["probe"]["test_scores"] == probe.info["test_scores"]
    values = attributes.scalars(results)
    assert values["prompt_agreement/test_captions/all/all"] == expected["all"]["all_attributes"]
    assert "prompt_agreement/held_out/all/colour_1" in values
    assert "prompt agreement on 'test' captions" in attributes.format_report(results)


def test_agreement_reads_the_samples_sample_quality_drew_instead_of_drawing_them_again(
        probe_cache, shapes_dir):
    _, probe = probe_cache
    images, _, captions = attributes.read_split("shapes", "test", data_dir=shapes_dir)
    tokenizer = text.Tokenizer.build(captions)
    agreement = attributes.PromptAgreement("shapes", tokenizer=tokenizer, data_dir=shapes_dir,
                                           num_samples=16, batch_size=6, probe=probe)
    drawn_alone = agreement.evaluate(_RealImages(images, captions, tokenizer), seed=2)
    # Sample quality with the same count, batch size and prompts, as `prepare` wires them.
    quality = sample_quality.SampleQuality(
        "shapes", data_dir=shapes_dir, options=sample_quality.Options(num_samples=16,
                                                                      batch_size=6),
        extractor=lambda batch: (np.zeros([len(batch), 2]), None))
    quality.prompts = agreement.tokens(agreement.sets["test_captions"])
    model = _RealImages(images, captions, tokenizer)
    quality.sample_features(model, seed=2, observe=agreement.observe)
    assert [n for n, _ in model.calls] == [6, 6, 4]
    shared = agreement.evaluate(model, seed=2)
    assert len(model.calls) == 3  # no batch drawn twice
    assert shared["test_captions"] == drawn_alone["test_captions"]
    agreement.evaluate(model, seed=2)  # what was observed is used once
    assert len(model.calls) == 6


@pytest.mark.slow  # builds a text ldm (10 s); the rest of `prepare` is checked above
def test_a_tiny_text_ldm_is_measured_through_prepare(probe_cache, shapes_dir, tmp_path):
    """The eval's wiring (`attributes.prepare`, which `trained.evaluate` calls) on an untrained
    text-conditional ldm built as tests/test_ldm.py builds one."""
    _, probe = probe_cache
    captions = attributes.read_split("shapes", "train", data_dir=shapes_dir, images=False)[2]
    tokenizer = text.Tokenizer.build(captions)
    tokenizer.save(str(tmp_path))
    ldm_class = registry.get_model("ldm")
    config = dataclasses.replace(
        ldm_class.tiny_config(), conditioning="text", text_vocabulary_size=tokenizer.size,
        text_max_length=tokenizer.max_length, text_width=8, text_layers=1, text_heads=2,
        held_out_combinations=("large blue",))
    model = ldm_class(config, image_shape=(32, 32, 3), num_classes=4,
                      stages=stages.untrained(config, (32, 32, 3), 4, tiny=True))
    assert attributes.takes_text(model)
    run = types.SimpleNamespace(dataset="shapes", eval_split="test", train_split="train",
                                image_size=None, config=config)
    quality = types.SimpleNamespace(num_samples=6, batch_size=6, classifier_dir=None)
    evaluator = types.SimpleNamespace(use_prompts=lambda tokens, observe: evaluator.__dict__.update(
        prompts=tokens, observe=observe))
    with pytest.MonkeyPatch.context() as patch:  # the tiny probe stands in for the real one
        patch.setattr(attributes, "load_probe", lambda *a, **k: probe)
        agreement = attributes.prepare(run, model, str(tmp_path), quality, evaluator,
                                       data_dir=shapes_dir)
    assert evaluator.prompts.shape == (6, tokenizer.max_length)
    assert agreement.held_out == ("large blue",)
    results = agreement.evaluate(model, seed=0)
    block = results["test_captions"]["all"]
    assert block["count"] == 6 and 0 <= block["all_attributes"] <= min(
        block["per_attribute"].values()) <= 1
    # No prompt agreement without text, nor when sample quality is skipped.
    assert attributes.prepare(run, model, str(tmp_path), None, evaluator) is None
