"""Tests for the embedded captioned dataset `aigc_zoo.data.shapes`."""

import math

import numpy as np
import pytest

from aigc_zoo import data
from aigc_zoo.data import shapes

NUM_SAMPLES = 400
# Each shape's area in units of half**2 (its bounding square is 2 half x 2 half).
AREAS = {"circle": math.pi, "square": 4.0, "triangle": 2.0, "diamond": 2.0}


@pytest.fixture(scope="module")
def sample():
    return shapes.render(NUM_SAMPLES, seed=0)


def test_render_is_deterministic_for_a_seed(sample):
    images, labels, attributes, captions = shapes.render(NUM_SAMPLES, seed=0)
    assert images.tobytes() == sample[0].tobytes() and captions == sample[3]
    assert images.shape == (NUM_SAMPLES, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and (labels == attributes["shape"][:, 0]).all()
    assert shapes.render(NUM_SAMPLES, seed=1)[0].tobytes() != images.tobytes()


def _parse(caption):
    """Caption -> list of (size, colour, shape) and the place or relation words."""
    words = caption.split()
    assert words[0] == "a", caption
    objects = [tuple(words[1:4])]
    if len(words) > 7 and words[-4] == "a":  # "<first> <relation> a <size> <colour> <shape>"
        return objects + [tuple(words[-3:])], " ".join(words[4:-4])
    return objects, " ".join(words[4:])


def test_captions_say_the_attributes(sample):
    _, _, attributes, captions = sample
    counts = np.bincount(attributes["count"], minlength=3)
    assert counts[0] == 0 and min(counts[1:]) > NUM_SAMPLES / 3
    for i, caption in enumerate(captions):
        objects, where = _parse(caption)
        assert len(objects) == attributes["count"][i], caption
        for k, (size, colour, shape) in enumerate(objects):
            assert size == shapes.SIZES[attributes["size"][i, k]], caption
            assert colour == shapes.COLOURS[attributes["colour"][i, k]], caption
            assert shape == shapes.SHAPES[attributes["shape"][i, k]], caption
        position = attributes["position"][i, 0]
        if len(objects) == 1:
            assert where == shapes.PLACE_WORDS[position]
        else:
            assert where == shapes.RELATION_WORDS[position]
            # The relation is the centres' analytic layout.
            (row0, col0), (row1, col1) = attributes["centre"][i]
            expected = {"above": row0 < row1 - 10, "below": row0 > row1 + 10,
                        "to the left of": col0 < col1 - 10, "to the right of": col0 > col1 + 10}
            assert expected[where], caption


def test_images_show_the_attributes(sample):
    images, _, attributes, _ = sample
    pixels = images.astype(np.float64)
    for i in range(NUM_SAMPLES):
        drawn = np.zeros((32, 32), bool)
        for k in range(attributes["count"][i]):
            centre = attributes["centre"][i, k]
            half = shapes.HALF_SIZES[attributes["size"][i, k]]
            rgb = shapes.RGB[attributes["colour"][i, k]]
            # The pixel holding the centre is fully covered: exactly the colour.
            row, col = np.floor(centre).astype(int)
            np.testing.assert_array_equal(images[i, row, col], rgb)
            # All ink of the object lies in its bounding square, and there is as much ink as
            # the shape's area (anti-aliased edges give partial pixels).
            top, left = np.floor(centre - half).astype(int)
            bottom, right = np.ceil(centre + half).astype(int)
            box = pixels[i, max(top, 0):bottom, max(left, 0):right]
            drawn[max(top, 0):bottom, max(left, 0):right] = True
            area = box.sum() / rgb.sum()
            shape = shapes.SHAPES[attributes["shape"][i, k]]
            assert abs(area - AREAS[shape] * half**2) < 0.06 * AREAS[shape] * half**2 + 1, (
                i, shape, area)
            # The object's colour and no other (channel ratios).
            np.testing.assert_allclose(box.reshape(-1, 3).sum(0) / box.sum(), rgb / rgb.sum(),
                                       atol=1e-2)
        assert images[i][~drawn].max() == 0, "ink outside the objects' squares"


def test_label_is_the_first_shape_and_every_value_occurs(sample):
    _, labels, attributes, _ = sample
    assert set(labels) == set(range(shapes.NUM_CLASSES))
    for name, values in zip(shapes.ATTRIBUTES,
                            (shapes.SHAPES, shapes.COLOURS, shapes.SIZES, shapes.POSITIONS)):
        assert set(attributes[name][:, 0]) == set(range(len(values))), name
    alone = attributes["count"] == 1
    assert (attributes["shape"][alone, 1] == -1).all() and np.isnan(
        attributes["centre"][alone, 1]).all()


def test_render_rejects_a_negative_count():
    with pytest.raises(ValueError, match="-1"):
        shapes.render(-1, seed=0)
    assert shapes.render(0, seed=0)[0].shape == (0, 32, 32, 3)


def test_prepared_builder_loads_with_captions(tmp_path):
    """A prepared builder with tiny splits, read through `data.open_captioned` and `load`."""
    small = {"train": 40, "test": 16}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shapes, "SPLITS", small)
        shapes.Shapes(data_dir=str(tmp_path)).download_and_prepare()
        examples, info = data.open_captioned("shapes", "test", data_dir=str(tmp_path))
        assert info.image_shape == (32, 32, 3) and info.num_classes == 4
        found = sorted((ex["image"].tobytes(), ex["caption"].decode(), int(ex["label"]))
                       for ex in examples.as_numpy_iterator())
        images, labels, _, captions = shapes.render(16, seed=shapes.SPLIT_SEEDS["test"])
        assert found == sorted(zip((x.tobytes() for x in images), captions,
                                   (int(x) for x in labels)))
        # In the stored order (TFDS shuffles examples by key), the same captions.
        assert sorted(data.captions("shapes", "train", data_dir=str(tmp_path))) == \
            sorted(shapes.render(40, seed=shapes.SPLIT_SEEDS["train"])[3])
        # The plain pipeline has no string tensors.
        batch = next(iter(data.load("shapes", "train", batch_size=8, training=True,
                                    data_dir=str(tmp_path))[0]))
        assert set(batch) == {"image", "label"}
