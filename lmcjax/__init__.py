"""lmcjax: linear mode connectivity of sparse networks found with distilled data.

Importing lmcjax changes nothing in the process (no environment variable, no
malloc setting): programs apply the CPU settings with cpu_runtime.configure().
"""
__version__ = "0.1.0"
