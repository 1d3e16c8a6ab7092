"""GAN losses and penalties against closed forms and numerical gradients."""

import math

import numpy as np
import pytest
import tensorflow as tf

from aigc_zoo import losses

REAL = tf.constant([2.0, -1.0, 0.5])
FAKE = tf.constant([-3.0, 0.0, 1.5])


def _softplus(x):
    return np.log1p(np.exp(x))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_minimax_losses_are_the_binary_cross_entropies():
    real, fake = REAL.numpy(), FAKE.numpy()
    expected_d = -np.mean(np.log(_sigmoid(real))) - np.mean(np.log(1 - _sigmoid(fake)))
    assert float(losses.minimax_discriminator_loss(REAL, FAKE)) == pytest.approx(expected_d,
                                                                                 rel=1e-6)
    expected_g = np.mean(np.log(1 - _sigmoid(fake)))
    assert float(losses.minimax_generator_loss(FAKE)) == pytest.approx(expected_g, rel=1e-6)
    expected_ns = -np.mean(np.log(_sigmoid(fake)))
    assert float(losses.non_saturating_generator_loss(FAKE)) == pytest.approx(expected_ns, rel=1e-6)


def test_discriminator_optimum_of_the_minimax_game():
    # With D(x) = 1/2 everywhere (logit 0) the discriminator's loss is 2 log 2.
    zeros = tf.zeros([4])
    assert float(losses.minimax_discriminator_loss(zeros, zeros)) == pytest.approx(2 * math.log(2))


def test_non_saturating_loss_keeps_its_gradient_when_the_generator_is_losing():
    confident_fake = tf.Variable([-10.0])
    with tf.GradientTape(persistent=True) as tape:
        minimax = losses.minimax_generator_loss(confident_fake)
        non_saturating = losses.non_saturating_generator_loss(confident_fake)
    assert abs(float(tape.gradient(minimax, confident_fake)[0])) < 1e-4
    assert abs(float(tape.gradient(non_saturating, confident_fake)[0])) > 0.99


def test_wasserstein_and_hinge_losses():
    assert float(losses.wasserstein_critic_loss(REAL, FAKE)) == pytest.approx(
        np.mean(FAKE) - np.mean(REAL))
    assert float(losses.wasserstein_generator_loss(FAKE)) == pytest.approx(-np.mean(FAKE))
    # relu(1 - [2, -1, 0.5]) = [0, 2, 0.5]; relu(1 + [-3, 0, 1.5]) = [0, 1, 2.5]
    assert float(losses.hinge_discriminator_loss(REAL, FAKE)) == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert float(losses.hinge_generator_loss(FAKE)) == pytest.approx(-np.mean(FAKE))


def test_least_squares_losses():
    # (2-1)^2 + (-1-1)^2 + (0.5-1)^2 = 5.25; 9 + 0 + 2.25 = 11.25
    assert float(losses.least_squares_discriminator_loss(REAL, FAKE)) == pytest.approx(
        0.5 * (5.25 / 3 + 11.25 / 3))
    # (-4)^2 + (-1)^2 + 0.5^2 = 17.25
    assert float(losses.least_squares_generator_loss(FAKE)) == pytest.approx(0.5 * 17.25 / 3)


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    weights = tf.constant([[3.0], [4.0]])  # ||w|| = 5 whatever the interpolate
    critic = lambda x: tf.squeeze(x @ weights, -1)  # noqa: E731
    real, fake = tf.random.normal([6, 2], seed=1), tf.random.normal([6, 2], seed=2)
    penalty = losses.gradient_penalty(critic, real, fake, tf.random.uniform([6], seed=3))
    assert float(penalty) == pytest.approx((5.0 - 1.0) ** 2, rel=1e-5)


def test_gradient_penalty_matches_numerical_gradients_on_images():
    kernel = tf.random.normal([3, 3, 1, 4], seed=4)

    def critic(images):
        features = tf.nn.conv2d(images, kernel, strides=1, padding="SAME")
        return tf.reduce_sum(tf.tanh(features) ** 2, axis=[1, 2, 3])

    real = tf.random.uniform([2, 5, 5, 1], -1, 1, seed=5, dtype=tf.float64)
    fake = tf.random.uniform([2, 5, 5, 1], -1, 1, seed=6, dtype=tf.float64)
    kernel = tf.cast(kernel, tf.float64)
    epsilon = tf.constant([0.25, 0.75], tf.float64)
    penalty = float(losses.gradient_penalty(critic, real, fake, epsilon))

    weight = epsilon[:, None, None, None]
    interpolates = (weight * real + (1 - weight) * fake).numpy()
    step, norms = 1e-6, []
    for example in interpolates:
        gradient = np.zeros_like(example)
        for index in np.ndindex(example.shape):
            up, down = example.copy(), example.copy()
            up[index] += step
            down[index] -= step
            difference = float(critic(up[None])[0]) - float(critic(down[None])[0])
            gradient[index] = difference / (2 * step)
        norms.append(np.linalg.norm(gradient))
    expected = np.mean((np.array(norms) - 1.0) ** 2)
    assert penalty == pytest.approx(expected, rel=1e-5)


def test_gradient_penalty_is_differentiable_inside_an_outer_tape():
    weights = tf.Variable([[0.5], [0.5]])
    critic = lambda x: tf.squeeze(x @ weights, -1)  # noqa: E731
    with tf.GradientTape() as tape:
        penalty = losses.gradient_penalty(critic, tf.ones([3, 2]), tf.zeros([3, 2]),
                                          tf.fill([3], 0.5))
    # penalty = (||w|| - 1)^2, so d/dw = 2 (||w|| - 1) w / ||w||
    norm = math.sqrt(0.5)
    expected = 2 * (norm - 1) * 0.5 / norm
    np.testing.assert_allclose(tape.gradient(penalty, weights).numpy(), [[expected], [expected]],
                               rtol=1e-5)


def test_r1_penalty_of_a_quadratic_critic():
    critic = lambda x: tf.reduce_sum(x ** 2, axis=1)  # noqa: E731  grad = 2x
    real = tf.constant([[1.0, 2.0], [0.0, 3.0]])
    # ||2x||^2 = 4 * [5, 9]
    assert float(losses.r1_penalty(critic, real)) == pytest.approx(4 * 7.0)
