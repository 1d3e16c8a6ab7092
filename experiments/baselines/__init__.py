"""Plain re-implementations of the keras-io recipes users would otherwise copy, for `make compare`.

Each module is one recipe (its source and what was changed for 28x28x1 `digits` are in its
docstring and in README.md next to it) and offers the same small interface to `compare.py`:

    model = recipe.build(seed)                    # compiled as the recipe compiles it
    x, fit_kwargs = recipe.fit_inputs(images)     # the recipe's own input (uint8 images in)
    model.fit(x, **fit_kwargs, ...)               # the recipe's own train_step
    samples = recipe.generate(model, count, seed) # [-1, 1], NHWC, for the zoo's metrics
"""

# family name on the command line -> (recipe module, the zoo model of the same family)
FAMILIES = {
    "dcgan": ("experiments.baselines.dcgan", "dcgan"),
    "vae": ("experiments.baselines.vae", "vae"),
    "ddim": ("experiments.baselines.ddim", "ddpm"),
}
