"""Tensors from PyTorch `.pt` files, read without torch and without running pickled code.

What torch.save writes (torch >= 1.6; checked against files torch 2.13.0 writes):
a zip archive (stored, not compressed) holding
  <name>/data.pkl       the saved object, pickled with protocol 2;
  <name>/data/<key>     each storage's raw bytes;
  <name>/byteorder      'little' or 'big' (absent in older files: little);
  <name>/version, .format_version, .storage_alignment, .data/serialization_id.
In data.pkl a tensor is `torch._utils._rebuild_tensor_v2(storage, storage_offset,
size, stride, requires_grad, backward_hooks[, metadata])`, its storage a persistent
id `('storage', torch.FloatStorage, '<key>', '<location>', numel)` and its hooks
`collections.OrderedDict()`; an nn.Parameter wraps one in
`torch._utils._rebuild_parameter(tensor, requires_grad, backward_hooks)`.

data.pkl is read by an Unpickler whose find_class knows only those globals and maps
them to the functions below, which build numpy arrays; every other global (os.system,
builtins.eval, ...) is refused with one line before anything could call it. The
legacy pre-1.6 format (a bare pickle stream) is refused: re-save it with torch >= 1.6.
"""
import collections
import io
import os
import pickle
import zipfile
import zlib
from typing import Any

import numpy as np

from lmcjax import validate

# torch's storage classes by name -> the numpy dtype of their elements.
# bfloat16 has no numpy dtype: its 16 bits are the top half of a float32.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
  """What `torch.<Name>Storage` unpickles to: only its element type."""

  def __init__(self, name: str):
    self.name = name


class _TensorUnpickler(pickle.Unpickler):
  """Unpickles data.pkl with tensors as numpy arrays read from the archive."""

  def __init__(self, data: bytes, path: str, archive: zipfile.ZipFile, prefix: str):
    super().__init__(io.BytesIO(data))
    self._path, self._archive, self._prefix = path, archive, prefix
    self._storages = {}
    order = prefix + "byteorder"
    self._big_endian = (order in archive.namelist()
                        and archive.read(order).strip() == b"big")

  def find_class(self, module: str, name: str) -> Any:
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return self._rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return self._rebuild_parameter
    if module == "torch" and name in STORAGE_DTYPES:
      return StorageType(name)
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    raise validate.InputError(
        f"{self._path}: refusing to load global {module}.{name}: only tensors, lists, dicts "
        "and numbers are read from a .pt file, so no code in it runs")

  def persistent_load(self, pid) -> np.ndarray:
    ok = (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
          and isinstance(pid[1], StorageType) and isinstance(pid[2], str)
          and isinstance(pid[4], int) and pid[4] >= 0)
    validate.require(ok, f"{self._path}: unknown storage reference {str(pid)[:80]!r}")
    _, kind, key, _, numel = pid
    if key not in self._storages:
      self._storages[key] = self._read_storage(kind.name, key, numel)
    return self._storages[key]

  def _read_storage(self, kind: str, key: str, numel: int) -> np.ndarray:
    member = f"{self._prefix}data/{key}"
    validate.require(member in self._archive.namelist(),
                     f"{self._path}: storage {key!r} is missing from the archive")
    raw = self._archive.read(member)
    dtype = STORAGE_DTYPES[kind]
    order = ">" if self._big_endian else "<"
    if dtype == "bfloat16":
      bits = np.frombuffer(raw, np.dtype(np.uint16).newbyteorder(order)).astype(np.uint32)
      values = (bits << 16).view(np.float32)
    else:
      values = np.frombuffer(raw, np.dtype(dtype).newbyteorder(order)).astype(dtype)
    validate.require(values.size >= numel, f"{self._path}: storage {key!r} holds "
                     f"{values.size} elements, the pickle says {numel}")
    return values[:numel]

  def _rebuild_tensor(self, storage, offset, size, stride, requires_grad=False,
                      backward_hooks=None, metadata=None) -> np.ndarray:
    """A copy of the tensor's elements; autograd state means nothing to numpy."""
    del requires_grad, backward_hooks, metadata
    ints = lambda t: isinstance(t, tuple) and all(isinstance(v, int) and v >= 0 for v in t)
    ok = (isinstance(storage, np.ndarray) and isinstance(offset, int) and offset >= 0
          and ints(size) and ints(stride) and len(size) == len(stride))
    validate.require(ok, f"{self._path}: malformed tensor record (size {size!r}, stride "
                     f"{stride!r}, offset {offset!r})")
    if 0 in size:
      return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    validate.require(last < storage.size, f"{self._path}: a tensor of size {size} reads past "
                     f"its storage ({storage.size} elements)")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride],
        writeable=False)
    return np.array(view, copy=True)

  def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None) -> np.ndarray:
    del requires_grad, backward_hooks
    validate.require(isinstance(data, np.ndarray), f"{self._path}: malformed parameter record")
    return data


def _data_pickle(path: str, archive: zipfile.ZipFile) -> str:
  """The archive's one `<name>/data.pkl`."""
  names = [n for n in archive.namelist() if n == "data.pkl"
           or (n.endswith("/data.pkl") and n.count("/") == 1)]
  validate.require(len(names) == 1, f"{path}: a torch .pt archive holds one <name>/data.pkl, "
                   f"found {len(names)}; is this a file torch.save wrote?")
  return names[0]


def _refuse_non_zip(path: str) -> None:
  with open(path, "rb") as f:
    head = f.read(2)
  validate.require(not head.startswith(b"\x80"), (
      f"{path}: legacy (pre-1.6) torch serialization is not read (it is a bare pickle "
      "stream); load it with torch and torch.save it again with torch >= 1.6"))
  raise validate.InputError(f"{path}: not a torch .pt file (not a zip archive, or cut short)")


def load(path: str) -> Any:
  """The object torch.save stored in `path`, with tensors as numpy arrays.

  Lists, tuples, dicts, numbers and strings come back as themselves. Any other
  pickled global is refused with a one-line InputError, as is a malformed file.
  """
  validate.require(bool(path) and os.path.isfile(path), f"torch file not found: {path!r}")
  if not zipfile.is_zipfile(path):
    _refuse_non_zip(path)
  try:
    with zipfile.ZipFile(path) as archive:
      name = _data_pickle(path, archive)
      prefix = name[:-len("data.pkl")]
      return _TensorUnpickler(archive.read(name), path, archive, prefix).load()
  except validate.InputError:
    raise
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
          IndexError, TypeError, ValueError, OSError) as e:
    raise validate.InputError(f"{path}: torch file is truncated or corrupt "
                              f"({type(e).__name__}: {e})") from e


def tensor(path: str, what: str) -> np.ndarray:
  """The single tensor a file holds (torch.save(tensor, path)); one line otherwise."""
  value = load(path)
  validate.require(isinstance(value, np.ndarray),
                   f"{path}: unknown layout: expected one tensor ({what}), found "
                   f"{type(value).__name__}")
  return value
