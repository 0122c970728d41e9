"""Process-wide settings that make XLA:CPU fast, applied by programs, never on import.

`import lmcjax` leaves the process alone: a notebook keeps exactly the process
it had. The programs (launch/main.py, launch/sweep.py, the bench scripts, the
test suite's conftest.py) call `configure()` first thing; a notebook that wants
the same speed calls it once, before its first JAX computation:

  from lmcjax import cpu_runtime
  cpu_runtime.configure()

Both settings act only if they are in place before JAX starts its CPU client
(at the first computation), and only where JAX will run on the CPU alone: on a
machine with a GPU or TPU backend nothing is changed. Profiles:
docs/performance.md (bench/bench_peer.py).

1. XLA flag `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`.
   jaxlib 0.10.2 hands single convolutions to YNNPACK. Its weight gradient of
   a 3x3 conv on 16x16x128 maps (batch 256) takes 5x the CPU time of XLA's
   own (1.28 s against 0.24 s), and the ConvNet-3 w128 train step drops from
   2.5 s to 1.6 s of CPU time without it. Other YNN fusions stay on.
2. glibc malloc. XLA:CPU allocates each execution's temporary buffer (171 MB
   for a ConvNet-3 w32 train step at batch 256) with malloc. glibc serves
   blocks above 32 MB with a fresh mmap and unmaps them on free, so every
   step page-faults its whole buffer again: 42k faults, half the step's time.
   Serving every block from the one main heap, and not trimming it below
   2 GiB, keeps those pages mapped. The cost is memory: freed blocks stay with
   the process for reuse, and the heap settles at ~3 temporary buffers more
   than before (ConvNet-3 w32: 570 MB -> 900 MB resident, flat over 400
   steps).

A user's own choice wins: an XLA_FLAGS entry for the flag, glibc malloc
settings in the environment (GLIBC_TUNABLES=glibc.malloc.*, MALLOC_*_), or
LMCJAX_CPU_DEFAULTS=0 to leave both alone.
"""
import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
from typing import Mapping

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_SETTING = f"{YNN_FLAG}=-individual_convolution"
OPT_OUT = "LMCJAX_CPU_DEFAULTS"
# glibc's mallopt parameters (malloc.h) and the values lmcjax sets.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
MALLOPT_SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_ARENA_MAX, 1))
MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_",
              "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
# The same settings as glibc environment variables, for a process that does not
# import lmcjax (bench/bench_peer.py gives them to its PyTorch worker).
MALLOPT_ENV_NAMES = {M_MMAP_MAX: "MALLOC_MMAP_MAX_", M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_",
                     M_ARENA_MAX: "MALLOC_ARENA_MAX"}
MALLOC_ENV_SETTINGS = {MALLOPT_ENV_NAMES[param]: str(value) for param, value in MALLOPT_SETTINGS}


def xla_flags_with_defaults(flags: str) -> str:
  """XLA_FLAGS with lmcjax's CPU setting appended, unless the flag is set."""
  if YNN_FLAG in flags:
    return flags
  return f"{flags} {YNN_SETTING}".strip()


def user_set_malloc(environ: Mapping[str, str]) -> bool:
  """Whether the environment already tunes glibc malloc."""
  return ("glibc.malloc" in environ.get("GLIBC_TUNABLES", "")
          or any(name in environ for name in MALLOC_ENV))


def accelerator_plugin_installed() -> bool:
  """Whether JAX could find a GPU or TPU backend here, found as JAX finds one
  (jax_plugins modules and entry points, libtpu) without starting JAX."""
  if importlib.util.find_spec("libtpu") is not None:
    return True
  if importlib.metadata.entry_points(group="jax_plugins"):
    return True
  if importlib.util.find_spec("jax_plugins") is None:
    return False
  import jax_plugins  # pylint: disable=g-import-not-at-top
  return any(True for _ in pkgutil.iter_modules(jax_plugins.__path__))


def cpu_only(environ: Mapping[str, str]) -> bool:
  """Whether JAX will run on the CPU alone in this process."""
  platforms = environ.get("JAX_PLATFORMS", "")
  return platforms == "cpu" or (not platforms and not accelerator_plugin_installed())


def keep_malloc_pages_mapped() -> bool:
  """Sets glibc malloc to reuse large blocks instead of unmapping them (see the
  module docstring). Returns False where libc is not glibc."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL("libc.so.6")
  return all(libc.mallopt(param, value) == 1 for param, value in MALLOPT_SETTINGS)


def configure(environ=os.environ) -> bool:
  """Applies both settings to this process where JAX will run on the CPU alone,
  unless the user opted out. Returns whether it applied them."""
  if environ.get(OPT_OUT, "1") == "0" or not cpu_only(environ):
    return False
  environ["XLA_FLAGS"] = xla_flags_with_defaults(environ.get("XLA_FLAGS", ""))
  if not user_set_malloc(environ):
    keep_malloc_pages_mapped()
  return True
