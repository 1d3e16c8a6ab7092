"""Shared fixtures and helpers: quiet TensorFlow, one prepared copy of the digits dataset and
one trained digits domain classifier per session, a private classifier cache; the runner in a
subprocess (`run_cli`, `one_line_error`) or in-process (`run_in_process`, `user_error`), tiny
models (`tiny_model`), workdir snapshots, checkpoint values and TensorBoard events."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# XLA on a CPU spends most of a compile in LLVM's optimiser; the tests' tiny models run a few
# steps, so their compiles (samplers, XLA train steps, in this process and in the runner
# subprocesses, which inherit it) skip it: about a third less time a compile. No level changes
# a floating-point result (XLA leaves LLVM's fast-math off), so every comparison holds.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

# Which settings `jit_compile="auto"` picks on a CPU depends on its kind (`device.cpu_kind`):
# the tests run the graph-mode defaults of an AVX-512 CPU on every machine, so that they trace
# alike (and as fast) everywhere; tests/test_base.py checks each kind's defaults.
os.environ["AIGC_ZOO_CPU_KIND"] = "avx512"

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"

# The train split of runs that only need a few batches: a training run fills its shuffle buffer
# with the whole split before the first step (about 4 s for `digits`' 60,000 images, 0.4 s for
# these). Runs whose samples are scored keep `train`: the cached domain classifier is the one
# of the run's own train split.
SMALL_SPLIT = "train[:1024]"


# The files that take longest, run first: pytest-xdist hands whole files (`--dist loadfile`,
# in this order with `--no-loadscope-reorder`) to idle workers, so a long file left for last
# would run alone at the end. Files that need no digits are interleaved, so the second worker
# has work while the first prepares the dataset.
_LONGEST_FIRST = ("test_every_model.py", "test_run.py", "test_distribute.py",
                  "test_sample_quality.py", "test_diffusion.py", "test_export.py",
                  "test_resume.py", "test_vae.py", "test_state_files.py",
                  "test_vqgpt.py", "test_pixelcnn.py", "test_gan.py", "test_prompts.py")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: left out of `make test` (its 8-minute budget on a 2-core machine); "
        "`make test-slow` runs them, and CI runs both (.ci/run)")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)
    items.sort(key=rank)  # stable: the order inside a file and among the rest is kept


def _made_once(tmp_path_factory, name: str, make) -> str:
    """A folder `name` that `make(folder)` fills once per test run: under pytest-xdist the
    workers share one (the first to arrive makes it, under a lock, the others wait)."""
    import fcntl
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base folders share this parent
    folder, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            folder.mkdir(exist_ok=True)
            make(str(folder))
            done.touch()
    return str(folder)


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir with the full `digits` dataset prepared (about 25 s, once)."""
    from aigc_zoo.data import digits
    return _made_once(tmp_path_factory, "tfds",
                      lambda folder: digits.Digits(data_dir=folder).download_and_prepare())


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Points `$AIGC_ZOO_CACHE` (inherited by runner subprocesses) at a temporary folder, so
    that no test reads or writes the user's `~/.cache/aigc_zoo`."""
    previous = os.environ.get("AIGC_ZOO_CACHE")
    os.environ["AIGC_ZOO_CACHE"] = str(tmp_path_factory.mktemp("aigc_zoo_cache"))
    yield os.environ["AIGC_ZOO_CACHE"]
    if previous is None:
        del os.environ["AIGC_ZOO_CACHE"]
    else:
        os.environ["AIGC_ZOO_CACHE"] = previous


def _seed_everything():
    import keras
    keras.utils.set_random_seed(0)


# Weight initialisers draw from the global seed state (the runner seeds it per run; a model's
# own `seed` covers its sampling draws), so each test file and each test starts from seed 0:
# under pytest-xdist which files ran before on a worker changes from run to run.
@pytest.fixture(scope="module", autouse=True)
def seeded_module():
    _seed_everything()


@pytest.fixture(autouse=True)
def seeded():
    _seed_everything()


@pytest.fixture(scope="session")
def digits_classifier_dir(digits_data_dir, tmp_path_factory) -> str:
    """A classifier cache holding the `digits` domain classifier, trained once (about 25 s)."""
    from aigc_zoo.metrics import classifier
    return _made_once(tmp_path_factory, "classifiers", lambda folder: classifier.load(
        "digits", data_dir=digits_data_dir, cache_dir=folder, verbose=False))


# -- helpers shared by the test files (import them with `from conftest import ...`) ----------

def cli_command(*flags: str) -> list[str]:
    """The command line of the runner with `flags`, for `subprocess` (run it with `cli_env`)."""
    import sys
    return [sys.executable, "-m", "aigc_zoo.run", *flags]


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment with the checkout importable (and `extra` variables)."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def run_cli(*flags: str, check: bool = True, env: dict | None = None, timeout: int = 600):
    """`python -m aigc_zoo.run <flags>` in a subprocess, as a user runs it; the result.

    With `check`, a non-zero exit fails the test with the end of stderr.
    """
    import subprocess
    result = subprocess.run(cli_command(*flags), capture_output=True, text=True,
                            env=cli_env(**(env or {})), cwd=REPO, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"runner failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def one_line_error(result, fragment: str = "", *, status: int = 2) -> str:
    """The runner's one `error:` line of a finished subprocess (exit `status`, no traceback,
    nothing else on stderr), checked to contain `fragment`."""
    assert result.returncode == status, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert fragment in lines[0], lines[0]
    return lines[0]


def run_in_process(*flags: str) -> str:
    """What the runner prints for the command line `flags`, run in this process through its own
    `parse` and `execute` (what `main` does, without the process's start-up)."""
    import contextlib
    import io

    from aigc_zoo import run
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run.execute(run.parse(["aigc_zoo", *flags]))
    return printed.getvalue()


def user_error(*flags: str) -> str:
    """The `UserError` that the command line `flags` ends in, run in this process through the
    runner's own `parse` and `execute` (what `main` does); fails the test if it ends without
    one. The runner turns exactly this error into its one `error:` line and exit status 2."""
    from aigc_zoo import run
    from aigc_zoo.errors import UserError
    try:
        run.execute(run.parse(["aigc_zoo", *flags]))
    except UserError as error:
        message = str(error)
        assert message and "\n" not in message, message
        return message
    pytest.fail(f"{flags} ended without a UserError")


def snapshot(folder) -> dict[str, str]:
    """Every file under `folder` and the sha256 of its bytes."""
    import hashlib
    folder = pathlib.Path(folder)
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def checkpoint_values(path) -> dict:
    """Name -> value of every tensor in the latest checkpoint of a folder (or a prefix)."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def tensorboard_events(logdir):
    """The event files under `logdir`, loaded (tensors kept whole)."""
    from tensorboard.backend.event_processing import event_accumulator
    accumulator = event_accumulator.EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def tiny_model(name: str, *, image_shape=(28, 28, 1), num_classes: int | None = 10,
               seed: int = 0, **changes):
    """Model `name` with its tiny config (fields changed by `changes`, checked), compiled
    without XLA: the small model the unit tests train for a few steps (on tiny untrained
    first stages, for a model built on some)."""
    import dataclasses

    from aigc_zoo import registry, stages
    model_class = registry.get_model(name)
    config = dataclasses.replace(model_class.tiny_config(), **changes)
    config.validate()
    # A model built on first stages gets tiny untrained ones (its mechanics need no training).
    model = model_class(config, image_shape=image_shape, num_classes=num_classes, seed=seed,
                        stages=stages.untrained(config, image_shape, num_classes, tiny=True))
    model.compile(jit_compile=False)
    return model
