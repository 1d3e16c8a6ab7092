"""Adding a model is one file: a family defined and registered here, with no other file touched,
goes through train, resume, sample, eval and export, through the Python API (`aigc_zoo.train`,
`aigc_zoo.load`) and the runner's own functions.

It is also a second stage: a diagonal Gaussian fitted to the latents of a trained, frozen VAE
(the config field `autoencoder` names the VAE's workdir), which samples by decoding its draws.
The VAE's workdir is deleted after the start: the second stage's workdir needs nothing from it.
"""

import dataclasses
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import SMALL_SPLIT, user_error

import aigc_zoo
from aigc_zoo import config as config_lib
from aigc_zoo import export, losses, registry, stages, trained
from aigc_zoo.errors import UserError
from aigc_zoo.models import base
from aigc_zoo.request import EvalRequest, SampleRequest
from aigc_zoo.metrics import sample_quality

NAME = "latent_gaussian"


@dataclasses.dataclass
class LatentGaussianConfig(config_lib.TrainConfig):
    """A Gaussian prior over a trained VAE's latents.

    Args:
        autoencoder: the workdir of a trained `vae` run (a first stage).
        learning_rate: Adam's step size.
        temperature: scale of the prior's standard deviation when sampling.
    """

    batch_size: int = 32
    epochs: int = 2
    steps_per_epoch: int = 20
    autoencoder: str = config_lib.stage_field(("vae",))
    learning_rate: float = 0.05
    temperature: float = config_lib.sampling_field(1.0)


class LatentGaussian(base.GenerativeModel):
    """Fits mean and log-scale of q(z) = N(mean, scale^2) to the VAE's posterior means."""

    config_class = LatentGaussianConfig
    loss_names = ("nll",)

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        latent_dim = self.autoencoder.config.latent_dim
        self.mean = self.add_weight(shape=(latent_dim,), initializer="zeros", name="mean")
        self.log_scale = self.add_weight(shape=(latent_dim,), initializer="zeros",
                                         name="log_scale")

    @classmethod
    def tiny_config(cls):
        return LatentGaussianConfig(batch_size=16, epochs=1, steps_per_epoch=3)

    @classmethod
    def check_stages(cls, config, image_shape, num_classes, stages):
        shape = tuple(stages["autoencoder"]["image_shape"])
        if shape != tuple(image_shape):
            raise UserError(f"the autoencoder was trained on images of shape {shape}, this "
                            f"dataset's are {tuple(image_shape)}")

    def update_groups(self):
        return [base.UpdateGroup("prior", [self.mean, self.log_scale],
                                 keras.optimizers.Adam(self.config.learning_rate), loss="nll")]

    def compute_losses(self, batch, *, training, group=None):
        latents, _ = self.autoencoder.encode(batch["image"])
        log_density = losses.log_normal(latents, self.mean, 2.0 * self.log_scale)
        return {"nll": -tf.reduce_mean(log_density)}

    def sampling_options(self):
        return {"temperature": base.SamplingOption(self.config.temperature, tf.float32,
                                                   "scale of the prior's standard deviation")}

    def sample_tensors(self, num_samples, seed, conditioning, *, temperature):
        seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        noise = tf.random.stateless_normal([num_samples, self.mean.shape[0]], seed_pair)
        return self.autoencoder.decode(self.mean + tf.exp(self.log_scale) * temperature * noise)


@pytest.fixture(scope="module")
def registered():
    registry.register_model(NAME)(LatentGaussian)
    yield LatentGaussian
    registry.unregister_model(NAME)


@pytest.fixture(scope="module")
def vae_workdir(tmp_path_factory, digits_data_dir):
    workdir = tmp_path_factory.mktemp("first") / "vae"
    aigc_zoo.train("vae", workdir=str(workdir), data_dir=digits_data_dir, config="tiny",
                   steps_per_epoch=4, sample_every_epochs=0, train_split=SMALL_SPLIT)
    return workdir


def test_a_bad_first_stage_is_one_line_before_anything_is_written(registered, vae_workdir,
                                                                  tmp_path, digits_data_dir):
    flags = (f"--model={NAME}", "--config=tiny", f"--data_dir={digits_data_dir}",
             f"--workdir={tmp_path / 'w'}")
    assert "needs autoencoder=<the workdir of a trained vae run>" in user_error(*flags)
    assert "no such workdir" in user_error(*flags, "--set", f"autoencoder={tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    assert "has no config.json" in user_error(*flags, "--set", f"autoencoder={tmp_path / 'empty'}")
    assert "this dataset's are (32, 32, 1)" in user_error(
        *flags, "--image_size=32", "--set", f"autoencoder={vae_workdir}")
    assert not (tmp_path / "w").exists()


def test_a_first_stage_of_the_wrong_kind_is_refused(registered, tmp_path, digits_data_dir):
    cvae = tmp_path / "cvae"
    aigc_zoo.train("cvae", workdir=str(cvae), data_dir=digits_data_dir, config="tiny",
                   steps_per_epoch=1, sample_every_epochs=0, train_split=SMALL_SPLIT)
    assert "it holds a 'cvae' run; autoencoder must be a trained vae run" in user_error(
        f"--model={NAME}", "--config=tiny", f"--data_dir={digits_data_dir}",
        f"--workdir={tmp_path / 'w'}", "--set", f"autoencoder={cvae}")


# Every mode of the runner on a two-stage model from one file (30 s beside another test);
# `make test` keeps the page's model through the harness (tests/test_adding_a_model.py) and
# this file's error checks; CI runs `make test-slow` too.
@pytest.mark.slow
def test_train_resume_sample_eval_export_with_the_first_stage_gone(
        registered, vae_workdir, tmp_path, digits_data_dir, digits_classifier_dir):
    first = tmp_path / "vae"
    shutil.copytree(vae_workdir, first)
    workdir = tmp_path / "prior"
    model = aigc_zoo.train(NAME, workdir=str(workdir), data_dir=digits_data_dir, epochs=1,
                           autoencoder=str(first), sample_every_epochs=0)
    assert [v.name for v in model.trainable_variables] == ["mean", "log_scale"]
    _, vae = trained.restore(str(first))
    for frozen, original in zip(model.autoencoder.variables, vae.variables, strict=True):
        np.testing.assert_array_equal(frozen.numpy(), original.numpy())
    record = json.loads((workdir / "config.json").read_text())
    stage = record["stages"]["autoencoder"]
    assert stage["model"] == "vae" and stage["step"] == 4
    assert stage["config_digest"] == stages.config_digest(vae.config)
    shutil.rmtree(first)  # from here on, nothing of the first stage's workdir is needed

    resumed = aigc_zoo.train(NAME, workdir=str(workdir), data_dir=digits_data_dir, epochs=2,
                             autoencoder=str(first), sample_every_epochs=0, temperature=0.5)
    assert int(resumed.global_step.numpy()) == 40
    for frozen, original in zip(resumed.autoencoder.variables, vae.variables, strict=True):
        np.testing.assert_array_equal(frozen.numpy(), original.numpy())
    # Fitted to the VAE's latents: the prior's mean moved off zero.
    assert np.abs(resumed.mean.numpy()).max() > 0.05

    loaded = aigc_zoo.load(str(workdir))
    assert loaded.config.temperature == 0.5  # a sampling field, changed on resume
    samples = loaded.generate(6, seed=1).numpy()
    assert samples.shape == (6, 28, 28, 1) and -1 <= samples.min() <= samples.max() <= 1
    np.testing.assert_array_equal(samples, resumed.generate(6, seed=1).numpy())
    colder = loaded.generate(6, seed=1, temperature=0.0).numpy()
    np.testing.assert_allclose(colder, np.repeat(colder[:1], 6, axis=0), atol=1e-6)

    path = str(tmp_path / "prior.keras")  # the first stage travels inside the file too
    loaded.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert reloaded.stage_descriptions == loaded.stage_descriptions
    np.testing.assert_array_equal(reloaded.generate(6, seed=1).numpy(), samples)

    paths = trained.sample(SampleRequest(str(workdir), num_samples=4, seed=2))
    with np.load(paths["npz"]) as saved:
        assert saved["images"].shape == (4, 28, 28, 1)
    quality = sample_quality.Options(num_samples=100, classifier_dir=digits_classifier_dir)
    results = trained.evaluate(EvalRequest(str(workdir), data_dir=digits_data_dir,
                                           quality=quality))
    assert results["num_samples"] == 100 and np.isfinite(
        results["sample_quality"]["model"]["fd"])

    export_dir = export.export_run(str(workdir), export_dir=str(tmp_path / "saved"))
    served = tf.saved_model.load(export_dir)
    assert {"generate", "sample"} <= set(served.signatures)
    np.testing.assert_array_equal(
        served.signatures["sample"](num_samples=tf.constant(6), seed=tf.constant(1),
                                    temperature=tf.constant(0.5))["images"].numpy(), samples)
