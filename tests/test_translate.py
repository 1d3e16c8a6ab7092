"""Tests for `--mode=translate` (aigc_zoo.translate) and the image-to-image evaluation
(aigc_zoo.metrics.translation), in-process on a tiny untrained espcn."""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from aigc_zoo import run as run_lib
from aigc_zoo import trained, translate
from aigc_zoo.data import paired
from aigc_zoo.errors import UserError
from aigc_zoo.metrics import translation
from aigc_zoo.models import image_to_image


@pytest.fixture(scope="module")
def espcn():
    model = image_to_image.ESPCN(image_to_image.ESPCN.tiny_config(), image_shape=(28, 28, 1),
                                 num_classes=10, seed=0)
    model.compile(jit_compile=False)
    return model


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (7, 7), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    (tmp_path / "c.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_a_corrupt_file_is_named_and_the_others_are_written(espcn, tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    inputs = _folder(tmp_path / "in")
    monkeypatch.setattr(trained, "restore", lambda *args, **kwargs: (None, espcn))
    with pytest.raises(UserError, match=r"1 of 3 images .* skipped: c\.png"):
        translate.run(str(inputs), str(inputs), str(tmp_path / "out"), seed=0)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a.png", "b.png"]
    for name in written:
        image = np.asarray(Image.open(tmp_path / "out" / name))
        assert image.shape == (28, 28) and image.dtype == np.uint8
    # The PNG holds the model's translation of the source, rounded to 8 bits.
    source, note = translate.read_source(str(inputs / "a.png"), espcn.task,
                                         espcn.source_shape, 0)
    assert note is None
    expected = (espcn.translate(source[None]).numpy()[0, ..., 0] + 1) * 127.5
    np.testing.assert_allclose(np.asarray(Image.open(tmp_path / "out" / "a.png")), expected,
                               atol=0.51)
    report = translate.translate_files(espcn, [str(inputs / "b.jpg")], str(tmp_path / "o2"))
    assert report.resized == ["resized b.jpg: its centre 20x20 square to 7x7"]
    assert not report.skipped


def test_files_are_read_as_training_reads_them(espcn, tmp_path):
    edges = paired.parse_task("edges")
    # 16-bit grey: half of 65535 is 128 of 255, not clipped to white as convert("L") did.
    Image.fromarray(np.full((28, 28), 32896, np.uint16)).save(tmp_path / "deep.png")
    source, _ = translate.read_source(str(tmp_path / "deep.png"), edges, (28, 28, 1), 0)
    np.testing.assert_allclose(source, 128 / 127.5 - 1, atol=1e-6)
    # EXIF orientation 3 (turned 180 degrees) is applied: the bright row ends at the bottom.
    pixels = np.zeros((28, 28), np.uint8)
    pixels[0] = 255
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)
    source, _ = translate.read_source(str(tmp_path / "turned.png"), edges, (28, 28, 1), 0)
    assert source[-1].min() == 1.0 and source[:-1].max() == -1.0
    # A wide image keeps its centre square (as local.read_image crops training images).
    wide = np.zeros((28, 40), np.uint8)
    wide[:, 6:34] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    source, note = translate.read_source(str(tmp_path / "wide.png"), edges, (28, 28, 1), 0)
    assert note is None and source.min() == 1.0
    # SR: an image at the target size is downsampled as the training pipeline does.
    target = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(target).save(tmp_path / "big.png")
    source, note = translate.read_source(str(tmp_path / "big.png"), espcn.task,
                                         espcn.source_shape, 0)
    expected = paired.downsample(target[None, ..., None] / 127.5 - 1.0, 4).numpy()[0]
    assert note is None
    np.testing.assert_allclose(source, expected, atol=1e-5)


def test_clashing_outputs_are_refused_before_anything_is_written(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "a.png"):
        Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "in" / name)
    inputs = translate.input_files(str(tmp_path / "in"))
    with pytest.raises(UserError, match=r"a\.jpg and .*a\.png would both be written to"):
        translate.run(str(tmp_path), str(tmp_path / "in"), str(tmp_path / "out"))
    with pytest.raises(UserError, match="is the folder of the input"):
        translate.output_paths(inputs[:1], str(tmp_path / "in" / "."))
    assert not (tmp_path / "out").exists()


def test_set_overrides_reach_the_restored_model(espcn, tmp_path, monkeypatch):
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "a.png")
    request = run_lib.parse(["run", "--mode=translate", f"--workdir={tmp_path}",
                             f"--input={tmp_path / 'a.png'}", f"--output={tmp_path / 'o'}",
                             "--set", "batch_size=8"])
    assert request.overrides == ("batch_size=8",)
    asked = {}

    def restore(*args, **kwargs):
        asked.update(kwargs)
        return None, espcn

    monkeypatch.setattr(trained, "restore", restore)
    translate.run(request.workdir, request.input, request.output, overrides=request.overrides)
    assert asked["overrides"] == ("batch_size=8",) and asked["mode"] == "translate"


def test_inpaint_holes_come_from_transparency(tmp_path):
    task = paired.parse_task("inpaint")
    pixels = np.full((28, 28, 4), 200, np.uint8)
    pixels[:10, :, 3] = 0  # the top rows are transparent: holes
    Image.fromarray(pixels, "RGBA").save(tmp_path / "holes.png")
    source, _ = translate.read_source(str(tmp_path / "holes.png"), task, (28, 28, 2), 0)
    np.testing.assert_array_equal(source[..., 1], np.repeat([[1.0] * 28] * 10 + [[0.0] * 28]
                                                            * 18, 1, axis=0))
    np.testing.assert_array_equal(source[:10, :, 0], 0.0)


def test_translate_requests_are_checked(tmp_path):
    with pytest.raises(UserError, match="--input"):
        run_lib.parse(["run", "--mode=translate", f"--workdir={tmp_path}",
                       f"--input={tmp_path / 'missing'}", f"--output={tmp_path / 'o'}"])
    with pytest.raises(UserError, match="--output"):
        run_lib.parse(["run", "--mode=translate", f"--workdir={tmp_path}",
                       f"--input={tmp_path}"])
    with pytest.raises(UserError, match="holds no images"):
        translate.input_files(str(tmp_path))


def test_evaluation_rows_match_closed_forms():
    rng = np.random.default_rng(3)
    images = rng.uniform(-0.8, 0.8, (6, 28, 28, 1)).astype(np.float32)
    labels = np.arange(6) % 2
    batches = [{**paired.batch_pairs(images[:4], "sr:4"), "label": labels[:4]},
               {**paired.batch_pairs(images[4:], "sr:4", first_index=4), "label": labels[4:]}]

    def extractor(x):
        # Features: the mean pixel and its square; class 1 when the top-left pixel is > 0.
        x = np.asarray(x)
        features = np.stack([x.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)) ** 2], 1)
        probabilities = np.eye(2)[(x[:, 0, 0, 0] > 0).astype(int)]
        return features, probabilities

    # A "model" off by 0.1 everywhere: MSE 0.05^2 on [0, 1] pixels, PSNR 26.02 dB.
    results = translation.evaluate(lambda s: batches_by_source(s, batches) + 0.1, batches,
                                   paired.parse_task("sr:4"), (28, 28, 1), num_examples=5,
                                   extractor=extractor, num_classes=2)
    assert results["num_examples"] == 5
    assert results["model"]["psnr"] == pytest.approx(10 * math.log10(1 / 0.05 ** 2), abs=1e-3)
    assert results["baseline"]["name"] == "bicubic"
    bicubic = paired.upsample(tf.concat([b["source"] for b in batches], 0)[:5], (28, 28, 1))
    psnr, ssim = translation.psnr_ssim(bicubic, images[:5])
    assert results["baseline"]["psnr"] == pytest.approx(float(np.mean(psnr)), rel=1e-5)
    assert results["baseline"]["ssim"] == pytest.approx(float(np.mean(ssim)), rel=1e-5)
    assert results["target"]["label_agreement"] == pytest.approx(
        float(np.mean((images[:5, 0, 0, 0] > 0) == labels[:5])))
    assert results["model"]["fd"] > 0.0 and "fd" in results["baseline"]
    assert "translation (sr:4): 5 examples" in translation.format_report(results)
    assert translation.scalars(results)["translation/model/psnr"] == results["model"]["psnr"]
    edges = translation.evaluate(lambda s: tf.zeros([s.shape[0], 28, 28, 1]),
                                 [paired.batch_pairs(images, "edges")],
                                 paired.parse_task("edges"), (28, 28, 1))
    assert "baseline" not in edges and edges["num_examples"] == 6
    # Label agreement needs probabilities over the dataset's classes: none for an ImageNet
    # classifier's 1000 columns, or for top-less weights (None); no traceback either way.
    for probabilities in (np.full((5, 1000), 1e-3), None):
        other = translation.evaluate(lambda s: batches_by_source(s, batches), batches,
                                     paired.parse_task("sr:4"), (28, 28, 1), num_examples=5,
                                     extractor=lambda x, p=probabilities: (extractor(x)[0], p),
                                     num_classes=2)
        assert all("label_agreement" not in other[row] for row in ("model", "baseline"))
        assert "label_agreement" not in other.get("target", {}) and "fd" in other["model"]


def batches_by_source(sources, batches):
    """The targets of `sources` (looked up in the made-up batches)."""
    found = []
    for source in np.asarray(sources):
        for batch in batches:
            for candidate, image in zip(np.asarray(batch["source"]), np.asarray(batch["image"])):
                if np.array_equal(candidate, source):
                    found.append(image)
                    break
    return tf.constant(np.stack(found))
