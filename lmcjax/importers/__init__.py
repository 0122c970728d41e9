"""Importers of distilled sets other projects publish, into lmcjax's synthetic npz.

  idc   IDC's data.pt                                (torch_formats.py)
  mtt   MTT's images_best.pt, labels_best.pt        (torch_formats.py)
  datm  DATM's images/labels/lr_best.pt             (torch_formats.py)
  frepo FRePo's flax checkpoint (+ its ZCA file)     (jax_formats.py)
  rcig  RCIG's flax checkpoint (+ its ZCA file)      (jax_formats.py)

Each module's docstring records the layout its project writes and the source files
it was read from. Nothing here executes a pickle: torch files are read by
torchfile.py's restricted unpickler, flax checkpoints are msgpack. The command line
is launch/import_distilled.py; the result is config.distill.load_path's input.
"""
from lmcjax.importers.common import Inputs
from lmcjax.importers.registry import FORMATS, get, import_set

__all__ = ["FORMATS", "Inputs", "get", "import_set"]
