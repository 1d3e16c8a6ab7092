"""Package metadata for aigc_zoo: `pip install -e .` (add `[test]` for the test suite)."""

from setuptools import find_packages, setup

setup(
    name="aigc_zoo",
    version="0.1.0",
    description="A zoo of generative image models (VAEs, GANs, diffusion) for TensorFlow/Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["aigc_zoo", "aigc_zoo.*"]),
    install_requires=[
        "tensorflow>=2.16",  # Keras 3 as `keras`
        # models/base.py overrides a private method of Keras' trainer (`_maybe_symbolic_build`),
        # so Keras is pinned to the minor versions it was checked on (tests/test_keras_version.py).
        "keras>=3.15,<3.16",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets 4.9.10 cannot build any dataset without it, yet does not require it.
        "importlib_resources",
        "tensorboard",  # the viewer and the hparams plugin; TensorFlow no longer brings it
        "numpy",
        "matplotlib",
        "pillow",  # image folders are decoded with PIL (matplotlib brings it too)
        "absl-py",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist"],  # the suite runs on every core (Makefile)
        "lint": ["ruff"],
    },
    entry_points={"console_scripts": ["aigc-zoo=aigc_zoo.run:console_main"]},
)
