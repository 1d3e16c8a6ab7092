"""The Python API: what the runner does, as functions (the package exports them).

    import aigc_zoo
    model = aigc_zoo.train("vae", epochs=2, latent_dim=16)   # python -m aigc_zoo.run ...
    model = aigc_zoo.load("runs/vae-digits")                  # the trained model
    images = model.generate(16, seed=0)
"""

from __future__ import annotations

from typing import Any


def load(workdir: str) -> Any:
    """The model trained in `workdir`, with its latest checkpoint's weights.

    Raises:
        UserError: no trained run there (or a workdir that does not load).
    """
    from aigc_zoo import trained
    return trained.restore(workdir)[1]


def train(model: str = "vae", **settings: Any) -> Any:
    """Train as `python -m aigc_zoo.run --model=<model> ...` does, and return the model.

    A keyword that names a runner flag is that flag (`dataset`, `workdir`, `epochs`,
    `data_dir`, `config="tiny"`, `overwrite=True`, ...); any other keyword sets a field of the
    model's config (`--set latent_dim=16`). Values are checked exactly as on the command line:
    a bad one raises `UserError` with the runner's one-line message, before anything is
    written. Like the runner, it seeds the global random state with `seed` (default 0), so
    the same call trains the same weights.
    """
    from aigc_zoo import run as runner
    from aigc_zoo import training
    from aigc_zoo.errors import UserError

    argv = ["aigc_zoo", f"--model={model}"]
    # The runner's own flags only: absl's (verbosity, flagfile, ...) are not settings.
    runner_flags = {flag.name for flag in runner.FLAGS.get_flags_for_module(runner.__name__)}
    for name, value in settings.items():
        if value is None:  # the runner's default, as when the flag is not given
            continue
        if name in ("mode", "set"):
            raise UserError(f"aigc_zoo.train takes no {name!r}: it trains; pass config "
                            "fields as keywords")
        if name in runner_flags:
            argv.append(f"--{name}={_text(value)}")
        else:
            argv += ["--set", f"{name}={_text(value)}"]
    request = runner.parse(argv)
    strategy = None
    if request.strategy != "default" or request.num_cpu_devices != 1:
        strategy = runner.setup_devices(request.strategy, num_cpu_devices=request.num_cpu_devices,
                                        tpu=request.tpu)
    return training.train(request.run, request.options, strategy=strategy)


def _text(value: Any) -> str:
    """A keyword's value as the command line writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(str(item) for item in value)
    return str(value)
