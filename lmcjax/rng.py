"""Named, reproducible PRNG keys.

Every random draw in lmcjax starts from one of the config's named seeds
(config.seeds.init / data_order / augment / ...) and is specialised with
jax.random.fold_in on a purpose path, so adding a new draw never shifts an
existing one.
"""
import zlib
from typing import Union

import jax


def _as_int(part: Union[int, str]) -> int:
  # crc32 is stable across processes, unlike hash().
  return zlib.crc32(part.encode()) if isinstance(part, str) else int(part)


def named_key(seed: int, *path: Union[int, str]) -> jax.Array:
  """Key for `seed` folded with each element of `path` (ints or names)."""
  key = jax.random.PRNGKey(seed)
  for part in path:
    key = jax.random.fold_in(key, _as_int(part))
  return key
