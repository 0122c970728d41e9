"""The published formats lmcjax imports, each registered once with what it reads."""
import dataclasses
import os
from typing import Any, Dict

from lmcjax import synthetic
from lmcjax import validate
from lmcjax.importers import common
from lmcjax.importers import jax_formats
from lmcjax.importers import torch_formats

FORMATS: Dict[str, common.Format] = {f.name: f for f in (
    torch_formats.IDC, torch_formats.MTT, torch_formats.DATM,
    jax_formats.FREPO, jax_formats.RCIG)}
_FILES = ("images", "labels", "lr_file", "checkpoint", "zca")


def get(name: str) -> common.Format:
  validate.choice("--format", name, tuple(FORMATS))
  return FORMATS[name]


def check_inputs(fmt: common.Format, inputs: common.Inputs) -> None:
  """Every required input given, none that the format does not read."""
  reads = {**fmt.required, **fmt.optional}
  given = [f.name for f in dataclasses.fields(inputs) if getattr(inputs, f.name)]
  extra = [name for name in given if name not in reads]
  validate.require(not extra, f"--format={fmt.name} does not read --{extra[0] if extra else ''};"
                   f" it reads {', '.join('--' + name for name in reads)}")
  for name, what in fmt.required.items():
    validate.require(bool(getattr(inputs, name)), f"--format={fmt.name} needs --{name} ({what})")


def import_set(format_name: str, inputs: common.Inputs, dataset: str,
               out: str) -> Dict[str, Any]:
  """Reads a published set, writes it as lmcjax's npz at `out` and returns its metadata.

  The set is checked against the named dataset before it is written, and read back
  after with synthetic.load_checked, the reader of config.distill.load_path.
  """
  fmt = get(format_name)
  spec = common.dataset_spec(dataset)
  check_inputs(fmt, inputs)
  validate.require(bool(out), "--out is required: the .npz to write")
  got = fmt.read(inputs, spec)
  files = {name: os.path.abspath(getattr(inputs, name)) for name in _FILES
           if getattr(inputs, name)}
  meta = dict(got.meta, method=fmt.name, dataset=spec.name, mean=list(spec.mean),
              std=list(spec.std), ipc=common.per_class_count(got.labels),
              source=dict(got.meta.get("source", {}), format=fmt.name, files=files,
                          code=fmt.source))
  synthetic.check_compatible(out, got.images, got.labels, meta, spec)
  synthetic.save(out, got.images, got.labels, meta)
  _, _, meta = synthetic.load_checked(out, spec)
  return meta
