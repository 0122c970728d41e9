"""lmcjax: linear mode connectivity of sparse networks found with distilled data."""
from lmcjax import cpu_runtime as _cpu_runtime

__version__ = "0.1.0"
# Before any JAX computation starts the CPU client; see lmcjax/cpu_runtime.py.
_cpu_runtime.configure()
