"""Scaling out: `tf.distribute` strategies, logical CPU devices and mixed-precision policies.

    python -m aigc_zoo.run --model=dcgan --strategy=mirrored                # every local GPU
    python -m aigc_zoo.run --model=vae --strategy=mirrored --num_cpu_devices=2   # try it on a CPU
    TF_CONFIG='{...}' python -m aigc_zoo.run --model=vae --strategy=multiworker  # one per worker
    python -m aigc_zoo.run --model=ddpm --strategy=tpu --tpu=local --precision=mixed_bfloat16

`setup` must run before TensorFlow initialises its devices (the first op, or listing logical
devices): splitting the CPU into logical devices and configuring collective ops for several
workers are only possible before that. The runner calls it first thing in `main`.

Everything else is the same under every strategy: `training.train` builds the model, its
optimizers, trackers and checkpoint under `strategy.scope()`, and Keras' `fit` splits each
global batch between the replicas. See docs/scaling.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any

import keras
import tensorflow as tf

from aigc_zoo.errors import UserError

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
_TASK_TYPES = ("chief", "worker", "ps", "evaluator")  # what tf.distribute knows
_TPU_TIMEOUT = 120.0  # seconds to wait for a TPU to answer before giving up with one line


def split_cpu(num_devices: int) -> None:
    """Split the first physical CPU into `num_devices` logical devices (1: leave it whole).

    Raises `UserError` for a bad count, or when TensorFlow has already initialised its devices
    with a different split (it cannot be changed after that).
    """
    if num_devices < 1:
        raise UserError(f"bad value num_cpu_devices={num_devices}: expected an integer >= 1")
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or [None]) == num_devices:
        return  # already split so (or whole, for 1): nothing to change
    devices = [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    try:
        tf.config.set_logical_device_configuration(cpu, devices)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise UserError(f"cannot split the CPU into {num_devices} logical devices: TensorFlow "
                        f"already initialised its devices ({have} CPU); call "
                        "distribute.split_cpu() before any TensorFlow op") from None


def set_precision(precision: str) -> None:
    """Set Keras' global dtype policy; models built afterwards compute in it.

    Variables stay float32 under every policy; the models cast their losses to float32, and
    `GenerativeModel.compile` wraps each update group's optimizer in a `LossScaleOptimizer`
    under `mixed_float16`.
    """
    if precision not in PRECISIONS:
        raise UserError(f"bad value precision={precision!r}: expected one of "
                        f"{', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(precision)


def _cpu_devices() -> list[str]:
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def _mirrored() -> tf.distribute.Strategy:
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()  # every GPU; the CPU only feeds them
    # Without GPUs MirroredStrategy would take only the first CPU device; take them all (see
    # --num_cpu_devices) and reduce on the CPU, since NCCL needs GPUs.
    return tf.distribute.MirroredStrategy(
        _cpu_devices(), cross_device_ops=tf.distribute.ReductionToOneDevice())


def _multiworker() -> tf.distribute.Strategy:
    check_tf_config(os.environ.get("TF_CONFIG", ""))
    return tf.distribute.MultiWorkerMirroredStrategy()


def check_tf_config(text: str) -> None:
    """`UserError` unless `text` (the value of `TF_CONFIG`) is empty (this process alone) or a
    cluster description that agrees with itself: `cluster` maps chief / worker (and ps,
    evaluator) to non-empty lists of `host:port`, at most one chief, and `task` is a chief or
    worker of that cluster, its index within the list of its type. Checked before anything is
    started or written: TensorFlow would otherwise wait for tasks that do not exist."""
    if not text:
        return
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise UserError(f"TF_CONFIG is not JSON ({type(error).__name__}: {error}); "
                        "see docs/scaling.md") from None
    problem = _tf_config_problem(config)
    if problem:
        raise UserError(f"TF_CONFIG is not a usable cluster description: {problem}; "
                        "see docs/scaling.md")


def _tf_config_problem(config: Any) -> str | None:
    """What makes the parsed `TF_CONFIG` unusable for training, or None."""
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        return "no 'cluster' object"
    cluster, task = config["cluster"], config.get("task")
    for kind, addresses in cluster.items():
        if kind not in _TASK_TYPES:
            return f"unknown task type {kind!r} in 'cluster' (known: {', '.join(_TASK_TYPES)})"
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and ":" in a for a in addresses)):
            return f"cluster {kind!r} is not a non-empty list of 'host:port' addresses"
    if len(cluster.get("chief", [])) > 1:
        return f"the cluster has {len(cluster['chief'])} chiefs; it takes at most one"
    if not isinstance(task, dict):
        return "no 'task' object ({'type': 'worker', 'index': 0}, for example)"
    kind, index = task.get("type"), task.get("index")
    if kind not in ("chief", "worker"):
        return f"task type {kind!r} does not train (expected chief or worker)"
    if kind not in cluster:
        return f"task type {kind!r} is not in the cluster ({', '.join(cluster) or 'empty'})"
    if isinstance(index, bool) or not isinstance(index, int) or not \
            0 <= index < len(cluster[kind]):
        return (f"task index {index!r} is not in 0..{len(cluster[kind]) - 1}, the "
                f"{len(cluster[kind])} {kind} task(s) of the cluster")
    return None


def _tpu(address: str) -> tf.distribute.Strategy:
    if not address:
        raise UserError("--strategy=tpu needs --tpu: the TPU's name, its grpc:// address, or "
                        "'local' on a TPU VM")
    result: dict[str, Any] = {}

    def connect():  # in a thread: an unreachable address can block for minutes
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            result["strategy"] = tf.distribute.TPUStrategy(resolver)
        except Exception as error:  # noqa: BLE001 (any failure means: no usable TPU there)
            result["error"] = error

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(_TPU_TIMEOUT)
    if "strategy" in result:
        return result["strategy"]
    error = result.get("error")
    reason = (f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:160]}"
              if error is not None else f"no answer within {_TPU_TIMEOUT:.0f} s")
    raise UserError(f"no TPU reachable at --tpu={address} ({reason})")


def make_strategy(name: str, *, num_cpu_devices: int = 1, tpu: str = "") -> tf.distribute.Strategy:
    """The `tf.distribute` strategy `name` (one of `STRATEGIES`).

    Args:
        name: `default` (one device, no strategy), `mirrored` (every local GPU, or every
            logical CPU device), `multiworker` (`MultiWorkerMirroredStrategy`, cluster from
            `TF_CONFIG`; without it, this process alone) or `tpu` (`TPUStrategy`).
        num_cpu_devices: split the CPU into this many logical devices first (see `split_cpu`);
            1 leaves it whole.
        tpu: for `tpu`: what `TPUClusterResolver` takes (a name, `grpc://host:port`, `local`).
    """
    if name not in STRATEGIES:
        raise UserError(f"bad value strategy={name!r}: expected one of {', '.join(STRATEGIES)}")
    if tpu and name != "tpu":
        raise UserError("--tpu is only used with --strategy=tpu")
    split_cpu(num_cpu_devices)
    if name == "mirrored":
        return _mirrored()
    if name == "multiworker":
        return _multiworker()
    if name == "tpu":
        return _tpu(tpu)
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's checkpoints, summaries and files.

    True except on the non-chief workers of a multi-worker strategy, which must still take
    part in every save (it reads variables with collective ops) but write to a temporary
    folder.
    """
    return bool(strategy.extended.should_checkpoint)


def worker_name(strategy: tf.distribute.Strategy) -> str | None:
    """`worker 1 of 2` for a process of a multi-worker cluster, else None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or not resolver.cluster_spec().as_dict():
        return None
    total = sum(len(tasks) for kind, tasks in resolver.cluster_spec().as_dict().items()
                if kind in ("chief", "worker"))
    if total < 2:
        return None
    return f"{resolver.task_type} {resolver.task_id} of {total}"


def distribute_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shard the input by examples (not files) across workers.

    Every worker builds the same seeded pipeline and keeps its share of each global batch, so
    the replicas together see exactly the batches a single device would; sharding by file would
    fail with fewer files than workers (the embedded digits are one file).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def weights_digest(model: keras.Model) -> str:
    """A short hash of the model's weights: the workers of a synchronous run print equal ones."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(tf.convert_to_tensor(weight).numpy().tobytes())
    return digest.hexdigest()[:16]
