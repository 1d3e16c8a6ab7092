"""Text conditioning through the runner (issue 17): the tokenizer built, saved and resumed with
a run, `--prompt` sampling, the export's string prompts, bad prompts, held-out phrases.

One tiny `klae` and one tiny text-conditional `ldm` on a slice of `digits` (captioned, so the
`ldm` is text-conditional by default), trained in-process through the runner's own `parse` and
`execute`, serve every test of the module."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

import harness
from conftest import run_in_process, user_error
from aigc_zoo import data, export, registry, request, text, trained, training
from aigc_zoo.workdir import Workdir
from aigc_zoo.errors import UserError

SPLIT = "train[:160]"


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory, digits_data_dir):
    root = tmp_path_factory.mktemp("prompts")
    common = ("--config=tiny", f"--data_dir={digits_data_dir}", f"--train_split={SPLIT}")
    run_in_process("--model=klae", f"--workdir={root / 'klae'}", "--steps_per_epoch=1",
                   "--sample_every_epochs=0", *common)
    # No per-epoch picture (its trace costs seconds); its prompts are checked below.
    run_in_process("--model=ldm", f"--workdir={root / 'ldm'}", "--steps_per_epoch=2", *common,
                   "--sample_every_epochs=0",
                   "--set", f"autoencoder={root / 'klae'}",
                   "--set", "held_out_combinations=slanted seven")
    return {"klae": root / "klae", "ldm": root / "ldm", "data_dir": digits_data_dir}


@pytest.fixture(scope="module")
def restored(workdirs):
    """The text model, restored once, and its tokenizer."""
    return trained.restore(str(workdirs["ldm"]))[1], text.Tokenizer.load(str(workdirs["ldm"]))


def test_the_run_builds_saves_and_resumes_its_tokenizer(workdirs):
    ldm = workdirs["ldm"]
    record = json.loads((ldm / "config.json").read_text())
    tokenizer = text.Tokenizer.load(str(ldm))
    assert record["config"]["conditioning"] == "text"  # the default on a captioned dataset
    assert record["config"]["text_vocabulary_size"] == tokenizer.size
    assert record["config"]["text_max_length"] == tokenizer.max_length == 3
    assert record["config"]["held_out_combinations"] == ["slanted seven"]
    assert {"seven", "slanted", "eight"} <= set(tokenizer.vocabulary)
    # The same command again resumes: the sizes come back from the saved config and
    # tokenizer, so the run compares equal to the saved one (checked here without training
    # again: what `training._train` does first).
    from aigc_zoo import run
    again = run.parse(["aigc_zoo", "--model=ldm", f"--workdir={ldm}", "--config=tiny",
                       f"--data_dir={workdirs['data_dir']}", f"--train_split={SPLIT}",
                       "--steps_per_epoch=2", "--sample_every_epochs=0",
                       "--set", f"autoencoder={workdirs['klae']}",
                       "--set", "held_out_combinations=slanted seven"])
    assert again.run.config.text_vocabulary_size == 0  # not known before the run starts
    folder = Workdir(str(ldm))
    previous = folder.read()
    resumed, loaded, captions = training._text(again.run, previous, folder,
                                               data_dir=again.options.data_dir)
    assert loaded.vocabulary == tokenizer.vocabulary and captions is None
    folder.check_same_run(previous, resumed.to_json())  # no "holds a different run"


def test_sampling_with_prompts_records_them(workdirs, tmp_path):
    ldm = str(workdirs["ldm"])
    printed = run_in_process("--mode=sample", f"--workdir={ldm}", "--prompt=a seven",
                             "--prompt=A slanted two!", "--samples_per_prompt=3")
    arrays = np.load(printed.split(" and ")[-1].strip())
    assert arrays["images"].shape == (6, 28, 28, 1)
    assert arrays["prompts"].tolist() == ["a seven"] * 3 + ["A slanted two!"] * 3
    tokenizer = text.Tokenizer.load(ldm)
    np.testing.assert_array_equal(arrays["tokens"], tokenizer.encode(arrays["prompts"]))
    # Without prompts: the first distinct eval captions that the tokenizer encodes (the
    # per-epoch picture's, drawn by the fixture's training), samples_per_prompt (8) each.
    first = training.default_prompts(Workdir(ldm).require().run,
                                     tokenizer, 2, data_dir=workdirs["data_dir"])
    assert len(set(first)) == 2 and tokenizer.encode(first).shape == (2, 3)
    picture = training._picture_prompts(Workdir(ldm).require().run, request.TrainOptions(
        ldm, data_dir=workdirs["data_dir"]), tokenizer, 20)["tokens"]
    assert picture.shape == (20, 3) and (picture[:8] == tokenizer.encode(first[:1])).all()
    assert (picture[8:16] == tokenizer.encode(first[1:])).all()
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("an eight\n\n a seven\n")
    from aigc_zoo import run
    assert run.parse(["aigc_zoo", "--mode=sample", f"--workdir={ldm}",
                      f"--prompts_file={prompts_file}"]).prompts == ("an eight", "a seven")


@pytest.mark.parametrize("flags, fragment", [
    (("--prompt=",), "empty prompt ''"),
    (("--prompt=a purple seven",), "unknown word 'purple'"),
    (("--prompt=a slanted seven today",), "has 4 words, more than the 3"),
    (("--prompt=a seven", "--num_samples=4"), "--num_samples is for sampling without"),
    (("--prompt=a seven", "--prompts_file=/nonexistent"), "not both"),
    (("--samples_per_prompt=0",), "bad value samples_per_prompt=0"),
])
def test_bad_prompts_are_one_line_errors(workdirs, flags, fragment):
    assert fragment in user_error("--mode=sample", f"--workdir={workdirs['ldm']}", *flags)


def test_prompts_to_a_model_without_text_are_refused(workdirs):
    assert "klae takes no prompts: it takes no --prompt" in user_error(
        "--mode=sample", f"--workdir={workdirs['klae']}", "--prompt=a seven")
    assert "takes no --samples_per_prompt" in user_error(
        "--mode=sample", f"--workdir={workdirs['klae']}", "--samples_per_prompt=2")
    assert "--prompt is for --mode=sample" in user_error(
        "--mode=eval", f"--workdir={workdirs['ldm']}", "--prompt=a seven")
    model_class = registry.get_model("ldm")
    config = model_class.tiny_config()  # conditioning "none": an ldm trained without text
    run = request.Run("ldm", "digits", config)
    assert trained._trained_without(run, "prompts") == "was trained with conditioning=none"


def test_a_damaged_tokenizer_and_a_dataset_without_captions(workdirs, tmp_path):
    copy = tmp_path / "copy"
    import shutil
    shutil.copytree(workdirs["ldm"], copy)
    (copy / text.FILE).write_text('{"format": 1, "max_length": 3, "vocabulary": ["x"]}')
    message = user_error("--mode=sample", f"--workdir={copy}", "--prompt=a seven")
    assert f"{copy / text.FILE} is not a tokenizer" in message
    # A valid tokenizer that is not the run's (another size) is named too.
    text.Tokenizer(["a", "seven"], 3).save(str(copy))
    assert "is not this run's tokenizer" in user_error("--mode=export", f"--workdir={copy}")
    assert "is not this run's tokenizer" in user_error("--mode=sample", f"--workdir={copy}")
    # Text on a dataset without captions: one line, nothing written.
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / name)
    assert "no caption for" in user_error(
        "--model=ldm", "--config=tiny", f"--dataset=folder:{folder}", "--image_size=28",
        f"--workdir={tmp_path / 'w'}", "--set", f"autoencoder={workdirs['klae']}",
        "--set", "conditioning=text")
    assert not (tmp_path / "w").exists()


def test_text_by_default_only_on_captioned_data_and_when_not_chosen(workdirs):
    from aigc_zoo import run
    flags = ["aigc_zoo", "--model=ldm", "--set", f"autoencoder={workdirs['klae']}"]
    assert run.parse(flags).run.config.conditioning == "text"
    assert run.parse(flags + ["--set", "conditioning=label"]).run.config.conditioning == "label"
    assert run.parse(flags + ["--dataset=mnist"]).run.config.conditioning == "label"


# A text model's export end to end (28 s beside another test); `make test` keeps the graph
# tokenizer against the Python one (tests/test_text.py) and the harness's exports; CI runs
# `make test-slow` too.
@pytest.mark.slow
def test_the_export_takes_string_prompts_and_the_prompt_reaches_the_samples(workdirs,
                                                                             restored,
                                                                             tmp_path):
    # What `--mode=export` runs: the workdir's tokenizer and latest checkpoint, exported.
    model, tokenizer = restored
    export.export_run(str(workdirs["ldm"]), export_dir=str(tmp_path / "export"))
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    expected = model.generate(2, seed=3, tokens=tokenizer.encode(["a seven"] * 2)).numpy()
    served = loaded.signatures["generate"](num_samples=tf.constant(2), seed=tf.constant(3),
                                           prompts=tf.constant(["A Seven."]))["images"]
    np.testing.assert_array_equal(served.numpy(), expected)
    # The same seed and noise, another prompt: another sample.
    other = model.generate(2, seed=3, tokens=tokenizer.encode(["a two"] * 2)).numpy()
    assert np.abs(other - expected).max() > 0
    info = json.loads((tmp_path / "export" / export.INFO_FILE).read_text())
    assert info["tokenizer"]["vocabulary"][:2] == ["<pad>", "<null>"]
    for prompt, fragment in [("a purple seven", "unknown word"), ("!", "empty prompt"),
                             ("a slanted seven now", "has more than the 3 words")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=fragment):
            loaded.signatures["generate"](num_samples=tf.constant(1), seed=tf.constant(0),
                                          prompts=tf.constant([prompt]))


# The harness round-trips an unconditional tiny ldm in `make test`; this one adds the text
# encoder and the first stage inside the file (5 s), so it joins the export in the slow tier.
@pytest.mark.slow
def test_a_text_model_survives_a_keras_file_round_trip(restored, tmp_path):
    model, _ = restored
    assert model.config.conditioning == "text"
    harness.check_keras_file(model, tmp_path)  # made-up prompts (harness.prompts)


def test_a_text_models_own_evaluation_reads_each_example_with_its_captions_tokens(workdirs,
                                                                                  restored):
    model, tokenizer = restored
    run = Workdir(str(workdirs["ldm"])).require().run
    run = dataclasses.replace(run, eval_split="test[:150]")
    dataset, skipped = trained.evaluation_data(run, model, str(workdirs["ldm"]),
                                               data_dir=workdirs["data_dir"])
    captions = data.captions("digits", "test[:150]", data_dir=workdirs["data_dir"])
    kept = [caption for caption in captions if tokenizer.encodes(caption)]
    assert skipped == len(captions) - len(kept) and kept  # words the 160 captions never had
    tokens = np.concatenate([batch["tokens"].numpy() for batch in dataset])
    np.testing.assert_array_equal(tokens, tokenizer.encode(kept))


def test_held_out_phrases_are_dropped_by_whole_words_in_python_and_in_the_graph():
    captions = ["a slanted seven", "a seven", "a backslanted seven", "A SLANTED, seven!",
                "a slanted two"]
    dataset = tf.data.Dataset.from_tensor_slices({"caption": captions,
                                                  "image": np.zeros((5, 2, 2, 1), np.uint8)})
    info = data.DatasetInfo("made-up", (2, 2, 1), None, 5)
    kept, kept_info = data.without_phrases(dataset, info, captions, ("slanted seven",))
    names = [example["caption"].decode() for example in kept.as_numpy_iterator()]
    assert names == ["a seven", "a backslanted seven", "a slanted two"]
    assert kept_info.num_examples == 3
    assert [text.holds_phrase(c, ["slanted seven"]) for c in captions] == [
        True, False, False, True, False]
    with pytest.raises(UserError, match="no made-up training caption holds 'red circle'"):
        data.without_phrases(dataset, info, captions, ("red circle",))
