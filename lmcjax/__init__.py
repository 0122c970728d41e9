"""lmcjax: linear mode connectivity of sparse networks found with distilled data."""
__version__ = "0.1.0"
