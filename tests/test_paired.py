"""Tests for aigc_zoo.data.paired: the paired tasks' sources, against closed forms."""

import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import data
from aigc_zoo.data import paired
from aigc_zoo.errors import UserError


def test_parse_task_and_source_shapes():
    assert paired.parse_task("sr") == paired.Task("sr", 4)
    assert paired.parse_task("sr:2").name == "sr:2"
    assert paired.source_shape(paired.parse_task("sr:4"), (28, 28, 1)) == (7, 7, 1)
    assert paired.source_shape(paired.parse_task("sr:2"), (32, 32, 3)) == (16, 16, 3)
    assert paired.source_shape(paired.parse_task("inpaint"), (28, 28, 3)) == (28, 28, 4)
    assert paired.source_shape(paired.parse_task("edges"), (28, 28, 3)) == (28, 28, 1)
    for bad in ("sr:1", "sr:x", "colour", ""):
        with pytest.raises(UserError, match="task"):
            paired.parse_task(bad)
    with pytest.raises(UserError, match="divide by 3"):
        paired.source_shape(paired.parse_task("sr:3"), (28, 28, 1))


def test_downsampling_matches_closed_forms():
    constant = np.full((1, 28, 28, 1), 0.3, np.float32)
    np.testing.assert_allclose(paired.downsample(constant, 4).numpy(),
                               np.full((1, 7, 7, 1), 0.3), atol=1e-6)
    y, x = np.mgrid[:28, :28]
    # A one-pixel checkerboard of +-1 averages to 0 over any even block.
    fine = np.where((y + x) % 2, 1.0, -1.0).astype(np.float32)[None, ..., None]
    for factor in (2, 4):
        np.testing.assert_allclose(paired.downsample(fine, factor).numpy(), 0.0, atol=1e-6)
    # A checkerboard of FxF squares aligned with the blocks keeps its values, one per block.
    coarse = np.where((y // 4 + x // 4) % 2, 0.8, -0.6).astype(np.float32)[None, ..., None]
    by, bx = np.mgrid[:7, :7]
    np.testing.assert_allclose(paired.downsample(coarse, 4).numpy()[0, ..., 0],
                               np.where((by + bx) % 2, 0.8, -0.6), atol=1e-6)
    # Squares of 2 pixels in blocks of 4: each block holds two of each value.
    two = np.where((y // 2 + x // 2) % 2, 0.8, -0.6).astype(np.float32)[None, ..., None]
    np.testing.assert_allclose(paired.downsample(two, 4).numpy(), 0.1, atol=1e-6)


@pytest.mark.parametrize("factor", [4, 2])
def test_upsampling_is_tf_bicubic_and_compiles_with_xla(factor):
    sources = tf.random.stateless_uniform((3, 28 // factor, 28 // factor, 2), (1, factor), -1, 1)
    bicubic = tf.clip_by_value(tf.image.resize(sources, (28, 28), method="bicubic"), -1, 1)
    np.testing.assert_allclose(paired.upsample(sources, (28, 28, 2)), bicubic, atol=1e-6)
    # XLA has no bicubic resize; sr3 upsamples its sources inside its compiled steps.
    compiled = tf.function(lambda x: paired.upsample(x, (28, 28, 2)), jit_compile=True)
    np.testing.assert_allclose(compiled(sources), bicubic, atol=1e-6)


def test_masks_cover_a_quarter_to_a_half_and_repeat_per_example():
    coverages = []
    for index in range(24):
        seed = tf.constant([paired.PAIR_SEED, index], tf.int64)
        mask = paired.random_mask(28, 28, seed).numpy()
        assert set(np.unique(mask)) <= {0.0, 1.0}
        coverages.append(mask.mean())
        np.testing.assert_array_equal(mask, paired.random_mask(28, 28, seed).numpy())
    assert min(coverages) >= 0.25 and max(coverages) <= 0.5
    assert np.std(coverages) > 0.01  # drawn, not fixed
    rectangular = paired.random_mask(32, 48, tf.constant([1, 2], tf.int64)).numpy()
    assert 0.25 <= rectangular.mean() <= 0.5


def test_masks_hold_exactly_the_drawn_number_of_holes():
    # The coverage is the first draw of random_mask's split seeds; ties at the last priority
    # once made 2 of 300 seeds miss it by a pixel; 40 seeds at two sizes keep the test cheap.
    for index in range(40):
        for height, width in ((28, 28), (12, 20)):
            seed = tf.constant([paired.PAIR_SEED, index], tf.int64)
            first = tf.random.experimental.stateless_split(seed, 4)[0]
            coverage = tf.random.stateless_uniform([], first, *paired.MASK_COVERAGE)
            count = int(tf.round(coverage * float(height * width)))
            assert paired.random_mask(height, width, seed).numpy().sum() == count


def test_sources_of_each_task_have_their_shapes_and_ranges():
    images = np.random.default_rng(0).uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)
    for name, shape in (("sr:4", (7, 7, 1)), ("sr:2", (14, 14, 1)), ("inpaint", (28, 28, 2)),
                        ("edges", (28, 28, 1))):
        pairs = paired.batch_pairs(images, name)
        source = pairs["source"].numpy()
        assert source.shape == (4, *shape), name
        assert source.min() >= -1.0 and source.max() <= 1.0, name
        np.testing.assert_array_equal(pairs["image"].numpy(), images)
    inpaint = paired.batch_pairs(images, "inpaint")["source"].numpy()
    holes = inpaint[..., 1] == 1.0
    np.testing.assert_array_equal(inpaint[..., 0][holes], 0.0)  # the holes hide the image
    np.testing.assert_allclose(inpaint[..., 0][~holes], images[..., 0][~holes])
    flat = paired.batch_pairs(np.zeros((1, 28, 28, 1), np.float32), "edges")["source"]
    np.testing.assert_allclose(flat.numpy(), -1.0, atol=1e-3)  # no edges in a constant image
    step = np.where(np.arange(28) < 14, -1.0, 1.0).astype(np.float32)
    edge = paired.batch_pairs(np.broadcast_to(step[None, None, :, None], (1, 28, 28, 1)),
                              "edges")["source"].numpy()[0, 10, :, 0]
    assert edge[13] == edge[14] == 1.0 and edge[5] == -1.0


def test_pipeline_pairs_are_the_same_for_an_example_in_any_order():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 28, 28, 1)).astype(np.uint8)
    dataset, info = data.from_arrays("made-up", images, np.arange(12) % 10, 10, "train")

    def by_image(seed):
        stream = data.batches(dataset, info, split="train", batch_size=4, training=True,
                              seed=seed, task="inpaint")
        pairs = {}
        for batch in stream.take(3):
            assert set(batch) == {"image", "label", "source"}
            assert batch["source"].shape == (4, 28, 28, 2)
            for image, source in zip(batch["image"].numpy(), batch["source"].numpy()):
                pairs[image.tobytes()] = source
        return pairs

    first, second = by_image(0), by_image(1)
    assert len(first) == len(second) == 12
    for key, source in first.items():
        np.testing.assert_array_equal(source, second[key])
    evaluation = data.batches(dataset, info, split="train", batch_size=5, training=False,
                              task="sr:4")
    assert [batch["source"].shape[0] for batch in evaluation] == [5, 5, 2]
    with pytest.raises(UserError, match="divide"):
        data.batches(dataset, info, split="train", batch_size=4, training=False, task="sr:3")


# -- sources the data gives: paired folders (`pairs:<dir>`) and unpaired datasets ----------

def _pairs_folder(root, names=("a", "b", "c"), colour_target=False):
    """source/ and target/ of small made-up images named `names` (targets brighter)."""
    from PIL import Image
    rng = np.random.default_rng(3)
    for side in ("source", "target"):
        (root / side).mkdir(parents=True)
    for i, name in enumerate(names):
        grey = rng.integers(0, 200, (10, 10), dtype=np.uint8)
        Image.fromarray(grey).save(root / "source" / f"{name}.png")
        target = np.stack([grey + 50] * 3, -1) if colour_target and i == 0 else grey + 50
        Image.fromarray(target).save(root / "target" / f"{name}.jpg" if i == 1
                                     else root / "target" / f"{name}.png")
    return root


def test_a_paired_folder_is_a_paired_dataset(tmp_path):
    folder = _pairs_folder(tmp_path / "grey")
    batches, info = data.load(f"pairs:{folder}", "train", batch_size=3, training=False,
                              image_size=8, task="pairs")
    batch = next(iter(batches))
    assert info.image_shape == (8, 8, 1) and info.num_examples == 3
    assert batch["source"].shape == batch["image"].shape == (3, 8, 8, 1)
    # Pairs by name (a.png with a.png, b.png with b.jpg): targets are their sources + 50 grey
    # levels, up to the JPEG's rounding and the resize.
    gap = (batch["image"].numpy() - batch["source"].numpy()) * 127.5
    assert abs(np.median(gap) - 50) < 3
    # One colour file makes both sides RGB, as a folder of images does.
    colour, _ = data.load(f"pairs:{_pairs_folder(tmp_path / 'c', colour_target=True)}",
                          "train", batch_size=3, training=False, image_size=8, task="pairs")
    assert next(iter(colour))["source"].shape == (3, 8, 8, 3)
    with pytest.raises(UserError, match="task pairs reads the sources of a paired folder"):
        data.load("digits", "test[:4]", batch_size=2, training=False, task="pairs")


def test_bad_paired_folders_end_in_one_line_naming_the_problem(tmp_path):
    from conftest import user_error
    odd = _pairs_folder(tmp_path / "odd")
    (odd / "target" / "c.png").unlink()
    (odd / "source" / "d.png").write_bytes((odd / "source" / "a.png").read_bytes())
    message = user_error("--model=espcn", f"--dataset=pairs:{odd}", "--task=pairs",
                         f"--workdir={tmp_path / 'run'}", "--image_size=8")
    assert "2 file name(s) without a pair: c (no target/ file), d (no target/ file)" in message
    assert not (tmp_path / "run").exists()
    corrupt = _pairs_folder(tmp_path / "corrupt")
    (corrupt / "target" / "a.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"cannot decode image .*target/a\.png"):
        data.load(f"pairs:{corrupt}", "train", batch_size=1, training=False, task="pairs")
    (tmp_path / "none" / "source").mkdir(parents=True)
    with pytest.raises(UserError, match="no target/ sub-folder"):
        data.load(f"pairs:{tmp_path / 'none'}", "train", batch_size=1, training=False)
    # A task that makes its own sources would silently replace the folder's.
    good = _pairs_folder(tmp_path / "good")
    message = user_error("--model=espcn", f"--dataset=pairs:{good}", "--task=edges",
                         f"--workdir={tmp_path / 'run'}", "--image_size=8", "--set",
                         "batch_size=2")
    assert "holds its own sources, which task edges would replace" in message
    assert not (tmp_path / "run").exists()


def test_a_model_without_a_task_on_a_paired_folder_says_it_reads_the_targets_alone(
        tmp_path, capsys):
    from conftest import run_in_process
    folder = _pairs_folder(tmp_path / "pairs")
    run_in_process("--model=vae", f"--dataset=pairs:{folder}", f"--workdir={tmp_path / 'run'}",
                   "--image_size=28", "--epochs=1", "--steps_per_epoch=1", "--set",
                   "batch_size=2", "--eval_samples=0", "--sample_every_epochs=0")
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning:")]
    assert warnings == [f"warning: pairs:{folder} holds sources, which vae does not read (it "
                        "has no image-to-image task): it trains on the target images alone"]


def _class_folder(root, count, shape):
    """`count` random images of `shape` in class sub-folders 0/ and 1/ (alternating)."""
    from PIL import Image
    rng = np.random.default_rng(count)
    for i in range(count):
        (root / str(i % 2)).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels).save(root / str(i % 2) / f"{i:02d}.png")
    return root


def test_unpaired_batches_join_two_datasets_at_the_sources_shape(tmp_path):
    # Colour 20x20 targets for 12x12 grey sources: read at 12x12, in grey.
    sources = _class_folder(tmp_path / "x", 10, (12, 12))
    target = (f"folder:{_class_folder(tmp_path / 'y', 6, (20, 20, 3))}", "train[:5]",
              "train[:6]")
    batches, info = data.load(f"folder:{sources}", "train", batch_size=4, training=False,
                              image_size=12, task="unpaired", target=target)
    sizes = [int(batch["image"].shape[0]) for batch in batches]
    assert sizes == [4, 2]  # the shorter split ends an evaluation pass
    batch = next(iter(batches))
    assert batch["source"].shape == batch["image"].shape == (4, 12, 12, 1)
    assert set(batch) == {"source", "image", "label", "target_label"}
    assert batch["image"].numpy().min() >= -1 and batch["image"].numpy().max() <= 1
    plain, _ = data.load(f"folder:{sources}", "train", batch_size=4, training=False,
                         image_size=12)
    np.testing.assert_array_equal(batch["source"], next(iter(plain))["image"])
    training, _ = data.load(f"folder:{sources}", "train", batch_size=4, training=True,
                            image_size=12, task="unpaired", target=target)
    assert [int(b["image"].shape[0]) for b in training.take(5)] == [4] * 5  # repeated
    with pytest.raises(UserError, match="--target_dataset"):
        data.load(f"folder:{sources}", "train", batch_size=2, training=False,
                  task="unpaired", target=("", "train", "test"))
