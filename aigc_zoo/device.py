"""What the machine is: CPU or GPU name, cores, and which reduced precisions it runs natively.

The benchmark names its result files after `describe()["slug"]` and measures the dtype
policies `supported_precisions` returns.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from typing import Any

import keras
import tensorflow as tf

from aigc_zoo.errors import UserError

# CPU flags of native bfloat16 / float16 arithmetic (x86: AVX-512 and AMX; Arm: bf16, fphp).
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}
_FP16_FLAGS = {"avx512_fp16", "amx_fp16", "fphp"}


def git_commit() -> str | None:
    """The short commit of the checkout this package runs from, `-dirty` when it has changes
    (None outside a git checkout)."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10,
                                cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# The kinds of CPU whose measured defaults differ (`cpu_kind`, `Knobs.xla_on_cpu`).
CPU_KINDS = ("avx512", "avx2", "other")


def cpu_kind(flags: set[str] | None = None) -> str:
    """"avx512" (x86 with AVX-512), "avx2" (x86 with AVX2 and without AVX-512) or "other"
    (older x86, Arm, ...): where XLA or graph mode trains a model faster differs between the
    first two (docs/performance.md). `$AIGC_ZOO_CPU_KIND` overrides it, to reproduce another
    machine's defaults (the tests pin it, so that they run alike on every machine). `flags`:
    the CPU's, when the caller has read them already."""
    override = os.environ.get("AIGC_ZOO_CPU_KIND")
    if override:
        if override not in CPU_KINDS:
            raise UserError(f"bad value AIGC_ZOO_CPU_KIND={override!r}: expected one of "
                            f"{', '.join(CPU_KINDS)}")
        return override
    flags = _cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def describe() -> dict[str, Any]:
    """Name, kind (cpu/gpu), cores, library versions and a file-name slug of this machine."""
    gpus = tf.config.list_physical_devices("GPU")
    flags = _cpu_flags()
    info: dict[str, Any] = {
        "cpu": cpu_name(), "cpu_kind": cpu_kind(flags), "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__, "platform": platform.platform(),
        "cpu_bfloat16": bool(flags & _BF16_FLAGS), "cpu_float16": bool(flags & _FP16_FLAGS)}
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        info.update(kind="gpu", name=details.get("device_name", "GPU"),
                    compute_capability=list(details.get("compute_capability", (0, 0))),
                    gpus=len(gpus))
    else:
        info.update(kind="cpu", name=f"{info['cpu']}, {info['cores']} cores")
    slug = re.sub(r"[^a-z0-9]+", "-", info["name"].lower()).strip("-")
    info["slug"] = f"{info['kind']}-{slug}" if not slug.startswith(info["kind"]) else slug
    return info


def supported_precisions(info: dict[str, Any]) -> list[str]:
    """Keras dtype policies worth measuring here: float32 first, then the mixed ones the
    device computes natively (bfloat16: Ampere or newer GPUs, CPUs with bf16 instructions;
    float16: Volta or newer GPUs, CPUs with fp16 instructions)."""
    if info["kind"] == "gpu":
        major = info.get("compute_capability", [0])[0]
        native = {"mixed_bfloat16": major >= 8, "mixed_float16": major >= 7}
    else:
        native = {"mixed_bfloat16": info["cpu_bfloat16"], "mixed_float16": info["cpu_float16"]}
    return ["float32", *[policy for policy, ok in native.items() if ok]]
