"""Differentiable augmentations for data-efficient GANs: DiffAugment and ADA.

With little data a GAN's discriminator memorises the training images. Both remedies show the
discriminator augmented images only, real and generated alike, and backpropagate the
generator's loss through the same augmentations, so the generator is not pushed to produce
augmented-looking images:

- DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
  Training"): colour (brightness, saturation, contrast), translation and cutout, applied to
  every image (`diff_augment`).
- ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"): flips,
  90-degree rotations, integer translation, colour and cutout, each applied to an image with
  probability p (`ada_augment`); p follows the overfitting heuristic r_t = E[sign(D(real))]
  towards a target (`ada_update`).

Every function is pure: images in [-1, 1], NHWC float; an explicit stateless seed ([2] ints),
so one draw can be applied to two tensors (the same seed gives the same draw); the strength or
probability as an argument. Per-image random numbers are drawn through `share(draw, count)`,
by default `draw(count)`; a model under `tf.distribute` passes its `replica_share`, so each
replica takes its rows of the global batch's draw and N replicas augment as one device does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

MODES = ("none", "diffaugment", "ada")
POLICIES = ("color", "translation", "cutout")
Share = Callable[[Callable[[tf.Tensor], tf.Tensor], tf.Tensor], tf.Tensor]


def _whole(draw: Callable[[tf.Tensor], tf.Tensor], count: tf.Tensor) -> tf.Tensor:
    return draw(count)


def _uniform(seed: tf.Tensor, images: tf.Tensor, shape: Sequence[int], share: Share,
             low: float = 0.0, high: float = 1.0) -> tf.Tensor:
    """Per-image uniform numbers [batch, *shape] in [low, high)."""
    tail = tf.constant(list(shape), tf.int32)
    return share(lambda n: tf.random.stateless_uniform(
        tf.concat([[n], tail], 0), seed, low, high), tf.shape(images)[0])


def _seeds(seed: tf.Tensor, count: int) -> tf.Tensor:
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), count)


# -- colour (DiffAugment's: images change by at most `strength` times the paper's range) -------

def brightness(images: tf.Tensor, seed: tf.Tensor, *, strength: float = 1.0,
               share: Share = _whole) -> tf.Tensor:
    """Add one number in [-strength / 2, strength / 2) per image, then clip to [-1, 1].

    Args:
        images: [batch, H, W, C] in [-1, 1].
        seed: stateless seed [2].
        strength: 1 is DiffAugment's range; 0 is the identity.
        share: how per-image numbers are drawn (see the module docstring).
    Returns:
        Images of the same shape in [-1, 1].
    """
    shift = (_uniform(seed, images, [1, 1, 1], share) - 0.5) * strength
    return tf.clip_by_value(images + shift, -1.0, 1.0)


def saturation(images: tf.Tensor, seed: tf.Tensor, *, strength: float = 1.0,
               share: Share = _whole) -> tf.Tensor:
    """Scale each pixel's distance from its channel mean by a factor in [1 - s, 1 + s), clip.

    A no-op on one-channel images (a pixel is its own channel mean). Arguments as `brightness`.
    """
    delta = (_uniform(seed, images, [1, 1, 1], share) * 2.0 - 1.0) * strength
    mean = tf.reduce_mean(images, axis=3, keepdims=True)
    # x + (x - mean) * delta rather than mean + (x - mean) * factor: exact at strength 0.
    return tf.clip_by_value(images + (images - mean) * delta, -1.0, 1.0)


def contrast(images: tf.Tensor, seed: tf.Tensor, *, strength: float = 1.0,
             share: Share = _whole) -> tf.Tensor:
    """Scale each image's distance from its mean by a factor in [1 - s / 2, 1 + s / 2), clip.

    Arguments as `brightness`.
    """
    delta = (_uniform(seed, images, [1, 1, 1], share) - 0.5) * strength
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value(images + (images - mean) * delta, -1.0, 1.0)


def color(images: tf.Tensor, seed: tf.Tensor, *, strength: float = 1.0,
          share: Share = _whole) -> tf.Tensor:
    """Brightness, saturation and contrast in turn, each with its own draw."""
    seeds = _seeds(seed, 3)
    for index, op in enumerate((brightness, saturation, contrast)):
        images = op(images, seeds[index], strength=strength, share=share)
    return images


# -- geometry ----------------------------------------------------------------------------------

def translation(images: tf.Tensor, seed: tf.Tensor, *, ratio: float = 0.125,
                share: Share = _whole) -> tf.Tensor:
    """Shift each image by whole pixels, up to `ratio` of its size each way, filling with 0.

    Args:
        images: [batch, H, W, C] in [-1, 1] (static H and W).
        seed: stateless seed [2].
        ratio: the largest shift as a share of the height / width (DiffAugment: 1/8); 0 is the
            identity.
        share: how per-image numbers are drawn.
    Returns:
        Images of the same shape; uncovered pixels are 0 (DiffAugment's zero padding).
    """
    height, width = images.shape[1], images.shape[2]
    pad_y, pad_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    if not pad_y and not pad_x:
        return images
    shifts = tf.floor(_uniform(seed, images, [2], share) * [2 * pad_y + 1, 2 * pad_x + 1])
    shifts = tf.cast(shifts, tf.int32)
    padded = tf.pad(images, [[0, 0], [pad_y, pad_y], [pad_x, pad_x], [0, 0]])
    # Gathers (not a crop with a random offset) so the shift is per image and differentiable.
    rows = tf.range(height)[None, :] + shifts[:, :1]
    columns = tf.range(width)[None, :] + shifts[:, 1:]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, columns, axis=2, batch_dims=1)


def cutout(images: tf.Tensor, seed: tf.Tensor, *, ratio: float = 0.5,
           share: Share = _whole) -> tf.Tensor:
    """Set a square of `ratio` times the image size, at a random place per image, to 0.

    Arguments as `translation` (DiffAugment: ratio 1/2; 0 is the identity). The square may
    reach past the border; the gradient flows through the pixels outside it.
    """
    height, width = images.shape[1], images.shape[2]
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    if not size_y or not size_x:
        return images
    centres = tf.floor(_uniform(seed, images, [2], share) * [height, width])
    rows = tf.range(height, dtype=tf.float32)[None, :] - centres[:, :1] + size_y // 2
    columns = tf.range(width, dtype=tf.float32)[None, :] - centres[:, 1:] + size_x // 2
    inside_rows = (rows >= 0) & (rows < size_y)
    inside_columns = (columns >= 0) & (columns < size_x)
    inside = inside_rows[:, :, None] & inside_columns[:, None, :]
    return images * tf.cast(~inside, images.dtype)[..., None]


def flip(images: tf.Tensor) -> tf.Tensor:
    """Mirror left to right."""
    return tf.reverse(images, axis=[2])


def rotate90(images: tf.Tensor, seed: tf.Tensor, *, share: Share = _whole) -> tf.Tensor:
    """Rotate each image by a random multiple of 90 degrees (of 180 when it is not square,
    so the shape stays)."""
    square = images.shape[1] == images.shape[2]
    choices = 4 if square else 2
    turns = tf.floor(_uniform(seed, images, [], share) * choices)
    rotated = images
    for turn in range(1, choices):
        k = turn if square else 2 * turn
        pick = tf.reshape(tf.equal(turns, turn), [-1, 1, 1, 1])
        rotated = tf.where(pick, tf.image.rot90(images, k), rotated)
    return rotated


# -- the two pipelines -------------------------------------------------------------------------

def diff_augment(images: tf.Tensor, seed: tf.Tensor, *,
                 policy: Sequence[str] = POLICIES, share: Share = _whole) -> tf.Tensor:
    """DiffAugment (Zhao et al. 2020): the ops of `policy`, in order, on every image.

    Args:
        images: [batch, H, W, C] in [-1, 1].
        seed: stateless seed [2]; the same seed gives the same augmentation.
        policy: names from `POLICIES` (`color`, `translation`, `cutout`).
        share: how per-image numbers are drawn.
    Returns:
        Augmented images, same shape, in [-1, 1].
    """
    ops = {"color": color, "translation": translation, "cutout": cutout}
    seeds = _seeds(seed, max(len(policy), 1))
    for index, name in enumerate(policy):
        images = ops[name](images, seeds[index], share=share)
    return images


def ada_augment(images: tf.Tensor, seed: tf.Tensor, *, p: tf.Tensor | float,
                share: Share = _whole) -> tf.Tensor:
    """ADA's pipeline (Karras et al. 2020): flip, 90-degree rotation, integer translation,
    brightness, saturation, contrast and cutout, each applied to an image with probability p.

    Args:
        images: [batch, H, W, C] in [-1, 1].
        seed: stateless seed [2].
        p: the augmentation probability (a float or a scalar tensor); 0 is the identity.
        share: how per-image numbers are drawn.
    Returns:
        Augmented images, same shape, in [-1, 1].
    """
    ops = (lambda x, s: flip(x), lambda x, s: rotate90(x, s, share=share),
           lambda x, s: translation(x, s, share=share),
           lambda x, s: brightness(x, s, share=share),
           lambda x, s: saturation(x, s, share=share),
           lambda x, s: contrast(x, s, share=share),
           lambda x, s: cutout(x, s, share=share))
    seeds = _seeds(seed, 2 * len(ops))
    p = tf.cast(p, images.dtype)
    for index, op in enumerate(ops):
        chosen = _uniform(seeds[2 * index], images, [1, 1, 1], share) < p
        images = tf.where(chosen, op(images, seeds[2 * index + 1]), images)
    return images


def ada_update(p: tf.Tensor, r_t: tf.Tensor, *, target: float, step: tf.Tensor | float
               ) -> tf.Tensor:
    """ADA's controller: p_next = clip(p + sign(r_t - target) * step, 0, 1).

    Args:
        p: the current augmentation probability.
        r_t: E[sign(D(real))] over the last interval: near 1 when D is overconfident on reals.
        target: the r_t the controller aims for (the paper's 0.6).
        step: the adjustment; the paper uses images in the interval / (ada_kimg * 1000), so p
            can go from 0 to 1 within ada_kimg thousand images.
    Returns:
        The next p, in [0, 1].
    """
    return tf.clip_by_value(p + tf.sign(r_t - target) * step, 0.0, 1.0)
