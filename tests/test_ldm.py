"""`ldm`: the latent scale factor, the U-Net on odd grids, a vqvae first stage, text prompts.

The shared harness (tests/test_every_model.py) covers training, sampling, checkpoints, the
`.keras` file and the export on a tiny untrained `klae`."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import registry, stages
from aigc_zoo.errors import UserError
from aigc_zoo.models import ldm

LDM_CLASS = registry.get_model("ldm")


def test_the_scale_factor_is_one_over_the_latents_standard_deviation():
    rng = np.random.default_rng(0)
    latents = rng.normal(0.5, 3.0, (256, 7, 7, 4)).astype(np.float32)
    assert abs(float(ldm.latent_scale_factor(latents)) - 1 / 3.0) < 0.005
    # Over replicas it is the global batch's: the sums of the two halves give the same value.
    halves = [ldm.latent_scale_factor(part, lambda moments, part=part: moments)
              for part in np.split(latents, 2)]
    assert all(abs(float(h) - 1 / 3.0) < 0.01 for h in halves)


def test_latent_x0_predictions_are_clipped_at_sample_clip_a_sampling_field():
    config = LDM_CLASS.config_class()
    assert config.sample_clip == 5.0  # the scaled training latents' range on digits
    assert "sample_clip" in config_lib.sampling_fields(config)  # --set in --mode=eval too
    with pytest.raises(UserError, match="sample_clip"):
        dataclasses.replace(config, sample_clip=-1.0).validate()


# 30-40 s of tracing; the harness runs ldm on a klae in `make test`, CI runs `make test-slow`.
@pytest.mark.slow
def test_on_a_vqvae_the_scale_is_set_samples_decode_and_the_prompt_reaches_them(tmp_path):
    """One tiny text-conditional model on a vqvae's latents (the harness,
    tests/test_every_model.py, runs the label-conditional one on a tiny klae): cheaper than
    a model for each."""
    config = dataclasses.replace(
        LDM_CLASS.tiny_config(), widths=(8, 16), conditioning="text", text_vocabulary_size=6,
        text_max_length=3, text_width=8, text_layers=1, text_heads=2, label_dropout=0.5,
        # Unclipped: an untrained U-Net's x_0 predictions sit at any clip's bound whatever
        # the guidance, and the vqvae quantises them to the same codes (tests/test_samplers.py
        # checks the clip).
        sample_clip=0.0)
    config.validate()
    described = stages.untrained(config, (28, 28, 1), 10, tiny=True)
    described["autoencoder"].update(model="vqvae", config=config_lib.to_dict(
        registry.get_model("vqvae").tiny_config()))
    model = LDM_CLASS(config, image_shape=(28, 28, 1), num_classes=10, stages=described)
    model.compile(jit_compile=False)
    # The tiny vqvae's 7x7 grid: the U-Net runs at 7 and 4, cropping 8 back to 7.
    assert model.diffusion_shape()[:2] == (7, 7)
    assert any(layer.name.startswith("crop") for layer in model.unet.get_layer("unet").layers)
    assert float(model.scale()) == 1.0  # unset before training
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32),
             "label": np.zeros([8], np.int32),
             "tokens": rng.integers(2, 6, (8, 3)).astype(np.int32)}
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1, steps_per_epoch=1,
              verbose=0)
    # The first batch's latents set the scale factor.
    expected = float(ldm.latent_scale_factor(model.latents(batch["image"])))
    assert abs(float(model.latent_scale.numpy()) - expected) < 1e-4 * expected

    prompt_a, prompt_b = np.array([[2, 3, 0]] * 2), np.array([[4, 5, 0]] * 2)
    null = np.array([[1, 0, 0]] * 2)

    def sample(tokens, guidance):
        return model.generate(2, seed=3, tokens=tokens, guidance=guidance)

    conditional = sample(prompt_a, 1.0)
    assert conditional.shape == (2, 28, 28, 1) and np.all(np.abs(conditional) <= 1)
    assert np.abs(conditional - sample(prompt_b, 1.0)).max() > 0
    np.testing.assert_array_equal(sample(prompt_a, 0.0), sample(null, 1.0))
    np.testing.assert_array_equal(sample(prompt_b, 0.0), sample(null, 1.0))
    assert np.abs(sample(prompt_a, 3.0) - conditional).max() > 0
    # The `.keras` file of a text model (the harness's is label-conditional): the same config
    # and every weight, the text encoder's included, and the fitted scale. Its samples are not
    # drawn again (a second sampler trace); the harness compares samples for the klae one.
    model.save(str(tmp_path / "text.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "text.keras"), safe_mode=True)
    assert loaded.config == model.config and loaded.takes_text(loaded.config)
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy(), err_msg=saved.path)
    with pytest.raises(ValueError, match="token ids must be in"):
        model.generate(2, tokens=np.array([[6, 0, 0]] * 2))
    with pytest.raises(ValueError, match="needs tokens"):
        model.generate(2)
    with pytest.raises(ValueError, match="takes tokens, not labels"):
        model.generate(2, labels=[0, 1], tokens=prompt_a)
