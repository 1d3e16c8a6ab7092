"""The shared train_step: update groups, repeats, trackers, hooks and the step counter."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo.errors import UserError
from aigc_zoo.models import base


class TwoGroupToy(base.GenerativeModel):
    """A critic `a` pulled to the data mean (3 steps per train step), and `b` chasing `a`."""

    loss_names = ("critic_loss", "follower_loss")

    def __init__(self, **kwargs):
        super().__init__(base.config_lib.TrainConfig(), image_shape=(2, 2, 1), **kwargs)
        self.a = self.add_weight(shape=(), initializer="zeros", name="a")
        self.b = self.add_weight(shape=(), initializer="zeros", name="b")
        self.hook_calls = {
            name: keras.Variable(0, dtype="int64", trainable=False, name=f"hook_{name}")
            for name in ("critic", "follower")}
        self.a_seen_by_hook = keras.Variable(-1.0, trainable=False, name="a_seen_by_hook")
        self.critic_calls_seen_by_follower = keras.Variable(0, dtype="int64", trainable=False,
                                                            name="critic_calls_seen")

    def update_groups(self):
        return [base.UpdateGroup("critic", [self.a], keras.optimizers.SGD(0.1), "critic_loss",
                                 repeats=3),
                base.UpdateGroup("follower", [self.b], keras.optimizers.SGD(0.1), "follower_loss")]

    def compute_losses(self, batch, *, training, group=None):
        target = tf.reduce_mean(batch["image"])
        return {"critic_loss": tf.square(self.a - target),
                "follower_loss": tf.square(self.b - self.a)}

    def after_update(self, group):
        self.hook_calls[group].assign_add(1)
        if group == "critic":
            self.a_seen_by_hook.assign(self.a)
        else:
            self.critic_calls_seen_by_follower.assign(self.hook_calls["critic"])


def _dataset(mean=0.6):
    images = np.full((8, 2, 2, 1), mean, np.float32)
    dataset = tf.data.Dataset.from_tensor_slices({"image": images})
    return dataset.batch(4, drop_remainder=True).repeat()


def test_groups_step_in_order_with_repeats_and_learn():
    model = TwoGroupToy()
    model.compile(jit_compile=False)
    history = model.fit(_dataset(), epochs=2, steps_per_epoch=20, verbose=0)
    assert int(model.global_step.numpy()) == 40
    assert int(model.optimizers["critic"].iterations.numpy()) == 3 * 40
    assert int(model.optimizers["follower"].iterations.numpy()) == 40
    assert int(model.hook_calls["critic"].numpy()) == 3 * 40
    assert int(model.hook_calls["follower"].numpy()) == 40
    assert float(model.a.numpy()) == pytest.approx(0.6, abs=1e-3)
    assert float(model.b.numpy()) == pytest.approx(0.6, abs=1e-2)
    assert set(history.history) == {"critic_loss", "follower_loss"}
    assert history.history["follower_loss"][1] < history.history["follower_loss"][0]


def test_groups_step_in_order_and_hooks_see_the_updated_weights():
    model = TwoGroupToy()
    model.compile(jit_compile=False)
    model.fit(_dataset(), epochs=1, steps_per_epoch=1, verbose=0)
    # Three SGD steps on (a - 0.6)^2 from a = 0 with learning rate 0.1: a <- a + 0.2 (0.6 - a).
    a = 0.0
    for _ in range(3):
        a += 0.2 * (0.6 - a)
    assert float(model.a_seen_by_hook.numpy()) == pytest.approx(a, rel=1e-6)
    assert float(model.a.numpy()) == pytest.approx(a, rel=1e-6)
    # The follower steps after all three critic steps of the same train step.
    assert int(model.critic_calls_seen_by_follower.numpy()) == 3


def test_mixed_float16_wraps_each_group_optimizer_in_loss_scaling():
    model = TwoGroupToy(dtype="mixed_float16")
    model.compile(jit_compile=False)
    assert all(isinstance(group.optimizer, keras.optimizers.LossScaleOptimizer)
               for group in model.groups)
    model.fit(_dataset(), epochs=1, steps_per_epoch=3, verbose=0)
    assert int(model.global_step.numpy()) == 3
    assert np.isfinite(float(model.a.numpy()))


def test_random_seed_is_fresh_at_every_call():
    model = TwoGroupToy()
    seeds = [tuple(model.random_seed().numpy()) for _ in range(3)]
    assert len(set(seeds)) == 3


def test_steps_per_execution_counts_every_step():
    model = TwoGroupToy()
    model.compile(jit_compile=False, steps_per_execution=5)
    model.fit(_dataset(), epochs=1, steps_per_epoch=10, verbose=0)
    assert int(model.global_step.numpy()) == 10
    assert int(model.optimizers["critic"].iterations.numpy()) == 30


def test_test_step_reports_losses_without_updating():
    model = TwoGroupToy()
    model.compile(jit_compile=False)
    results = model.evaluate(_dataset(), steps=2, verbose=0, return_dict=True)
    assert results["critic_loss"] == pytest.approx(0.36, rel=1e-5)
    assert int(model.global_step.numpy()) == 0
    assert float(model.a.numpy()) == 0.0


def test_missing_group_loss_is_reported():
    class Broken(TwoGroupToy):
        def compute_losses(self, batch, *, training, group=None):
            return {"follower_loss": tf.square(self.b)}

    model = Broken()
    model.compile(jit_compile=False)
    with pytest.raises(KeyError, match="critic_loss"):
        model.fit(_dataset(), epochs=1, steps_per_epoch=1, verbose=0)


def test_fit_before_compile_is_refused():
    with pytest.raises(Exception, match="compile"):
        TwoGroupToy().fit(_dataset(), epochs=1, steps_per_epoch=1, verbose=0)


def test_auto_jit_is_off_without_an_accelerator():
    has_accelerator = any(d.device_type in ("GPU", "TPU") for d in tf.config.list_logical_devices())
    assert base.resolve_jit_compile("auto") is has_accelerator
    assert base.resolve_jit_compile(True) is True
    assert base.resolve_jit_compile(False) is False
    assert base.resolve_jit_compile("auto", on_cpu=True) is True
    assert base.resolve_jit_compile(False, on_cpu=True) is False


# Measured faster with XLA than in graph mode on an AVX2 CPU (make benchmark, 2026-12-07);
# the rest were as fast or faster in graph mode, or not measured (sr3).
XLA_ON_AVX2_MODELS = ("dcgan", "wgan_gp", "sngan", "cgan", "ddpm", "cddpm", "ldm", "espcn",
                      "pix2pix", "cyclegan")
GRAPH_ON_AVX2_MODELS = ("vae", "cvae", "klae", "vqvae", "vqgpt", "dalle", "pixelcnn", "cpixelcnn",
                        "sr3")


@pytest.mark.parametrize("kind", ["avx512", "avx2", "other"])
def test_auto_jit_on_a_cpu_follows_the_models_measurement_for_this_kind_of_cpu(kind,
                                                                             monkeypatch):
    import dataclasses

    from aigc_zoo import registry

    monkeypatch.setenv("AIGC_ZOO_CPU_KIND", kind)

    def xla(model, dataset="digits", image_shape=(28, 28, 1), **changes):
        model_class = registry.get_model(model)
        config = dataclasses.replace(model_class.default_config(dataset), **changes)
        return base.xla_on_this_cpu(model_class.knobs(config, image_shape).xla_on_cpu)

    # Fully connected GANs: XLA on every CPU.
    assert xla("gan") and xla("dcgan", architecture="mlp")
    assert xla("dcgan", "ring8", image_shape=(2,))  # every GAN is an MLP on 2D points
    assert all(xla(name) is (kind == "avx2") for name in XLA_ON_AVX2_MODELS)
    assert not any(xla(name) for name in GRAPH_ON_AVX2_MODELS)
    assert base.resolve_jit_compile("auto", on_cpu=base.XLA_ON_AVX2) is (
        kind == "avx2" or base.accelerator_present())
    assert base.resolve_jit_compile(False, on_cpu=base.XLA_ON_AVX2) is False


def test_the_runner_compiles_with_xla_on_an_avx2_cpu_where_the_model_declares_it(monkeypatch):
    from conftest import tiny_model

    monkeypatch.setenv("AIGC_ZOO_CPU_KIND", "avx2")
    for name, expected in (("dcgan", True), ("vae", False)):
        model = tiny_model(name)
        model.compile(jit_compile="auto")
        assert model.jit_compile is (expected or base.accelerator_present()), name


def test_cpu_kind_reads_the_flags_and_the_override(monkeypatch):
    from aigc_zoo import device

    monkeypatch.delenv("AIGC_ZOO_CPU_KIND", raising=False)
    for flags, kind in (({"sse2", "avx2", "avx512f"}, "avx512"), ({"sse2", "avx", "avx2"}, "avx2"),
                        ({"sse2", "avx"}, "other"), (set(), "other")):
        monkeypatch.setattr(device, "_cpu_flags", lambda flags=flags: flags)
        assert device.cpu_kind() == kind
    monkeypatch.setenv("AIGC_ZOO_CPU_KIND", "avx512")
    assert device.cpu_kind() == "avx512"
    monkeypatch.setenv("AIGC_ZOO_CPU_KIND", "sse")
    with pytest.raises(UserError, match="AIGC_ZOO_CPU_KIND='sse'"):
        device.cpu_kind()


@pytest.mark.parametrize("kind", ["avx512", "avx2"])
def test_sampling_is_compiled_with_xla_on_a_cpu_where_the_model_declares_it(kind, monkeypatch):
    import dataclasses

    from conftest import tiny_model
    from aigc_zoo import registry

    monkeypatch.setenv("AIGC_ZOO_CPU_KIND", kind)

    def declared(name, **changes):
        model_class = registry.get_model(name)
        config = dataclasses.replace(model_class.default_config("digits"), **changes)
        return base.xla_on_this_cpu(model_class.knobs(config, (28, 28, 1)).sampling_xla_on_cpu)

    # Measured (experiments/sampling_xla.py): the sequential samplers of small steps win with
    # XLA on every CPU; diffusion and the convolutional GANs only on an AVX2 one; vae never.
    assert declared("pixelcnn") and declared("cpixelcnn") and declared("vqgpt")
    assert not declared("pixelcnn", sample_cache=False)
    assert not any(declared(name) for name in ("vae", "vqvae", "gan"))
    assert not declared("dcgan", architecture="mlp")
    assert all(declared(name) is (kind == "avx2")
               for name in ("dcgan", "cgan", "ddpm", "cddpm", "ldm"))
    accelerator = base.accelerator_present()
    for name in ("pixelcnn", "vae", "ddpm"):
        model = tiny_model(name)
        static = {key: value for key, value in model.resolved_sampling_options({}).items()
                  if model.sampling_options()[key].dtype is None}
        function = model.sampling_function(static)
        # tf.function keeps its jit_compile setting in a private attribute; read it to be sure.
        assert model.samples_with_xla() is function._jit_compile is (
            accelerator or declared(name)), name
        model.sampling_jit_compile = not function._jit_compile  # what the benchmark does
        assert model.sampling_function(static)._jit_compile is not function._jit_compile
