"""Every network a workdir holds, reloaded in a few lines with no hand-built templates.

  from lmcjax import interpolate, results
  run = results.load("runs/default")
  run.names("branch")        # ['analysis/dense/copy_00', ..., 'analysis/real_r01/copy_02']
  a, b = run.variables("analysis/real_r01/copy_00"), run.variables("analysis/real_r01/copy_01")
  path = interpolate.evaluate_path(run.model, a, b, interpolate.default_alphas(31),
                                   run.setup.x_test, run.setup.y_test,
                                   mask=run.mask("analysis/real_r01/copy_00"))

The model and the template trees come from DIR/config.json exactly as the run
built them (runtime.setup), so a checkpoint of another model is refused
with one line. Network kinds and names:
  dense          'dense': the train stage's whole dense run;
  rewind         'dense/step_KKKKKKK' (a dense-run snapshot) and 'imp/rewind';
  imp            'imp/SOURCE/round_KK': round k retrained under its mask;
  imp_distilled  'imp/SOURCE/round_KK/distilled': round k trained on the distilled
                 set (kept only with imp.rewind_non_prunable=False);
  branch         'analysis/MODEL/copy_II': SGD-noise copy i of an analysed model;
  instability    'instability/MODEL/step_KKKKKKK/copy_II': a copy from step k;
  new_init       'inits/init_II/dense', 'inits/init_II/MODEL' and
                 'inits/init_II/MODEL_aligned': the cross-seed and mask-transfer
                 measures' nets from new init i (lmcjax.analysis.inits), dense,
                 under MODEL's mask, and under that mask aligned to init i.
"""
import dataclasses
import functools
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from lmcjax import checkpoints
from lmcjax import dense
from lmcjax import logs
from lmcjax import modelid
from lmcjax import runtime
from lmcjax import synthetic
from lmcjax import validate
from lmcjax import workdir as layout

PyTree = Any
KINDS = ("dense", "rewind", "imp", "imp_distilled", "branch", "instability", "new_init")
_ROUND = re.compile(r"^round_(\d+)$")
_INIT = re.compile(r"^init_(\d+)$")
_STEP = re.compile(r"^step_(\d+)$")
_COPY = re.compile(r"^copy_(\d+)$")


@dataclasses.dataclass(frozen=True)
class Network:
  """Where one trained network lives, and the mask it was trained under."""
  name: str
  kind: str
  checkpoint: str
  mask_checkpoint: Optional[str] = None  # None: a dense network


def _tuples(value):
  """JSON lists back to the tuples the configs hold (flax modules hash their fields)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was run with (DIR/config.json, written before any compute)."""
  path = os.path.join(workdir, "config.json")
  validate.require(os.path.isfile(path), f"{workdir!r} is not an lmcjax workdir: no config.json")
  return ml_collections.ConfigDict(_tuples(logs.read_json(path)))


def _subdirs(folder: str, pattern: re.Pattern) -> List[Tuple[int, str]]:
  """(number, path) of the sub-folders of `folder` named like `pattern`, in order."""
  names = os.listdir(folder) if os.path.isdir(folder) else []
  found = [(int(m.group(1)), os.path.join(folder, n))
           for n in names for m in [pattern.match(n)] if m]
  return sorted(found)


def _copies(parent: str, prefix: str, kind: str, mask: Optional[str]) -> List[Network]:
  return [Network(f"{prefix}/{os.path.basename(path)}", kind, path, mask)
          for _, path in _subdirs(os.path.dirname(layout.branch_copy(parent, 0)), _COPY)]


def _analysed_mask(workdir: str, name: str) -> Optional[str]:
  """The mask of an analysed model: none for the dense net, IMP's for a source's round."""
  model = modelid.ModelId.parse(name)
  return None if model.round is None else layout.mask(workdir, model.source, model.round)


def _dense_networks(workdir: str, config) -> List[Network]:
  out = [Network("dense", "dense", dense.final_path(workdir, config))]
  out += [Network(f"dense/{os.path.basename(p)}", "rewind", p)
          for _, p in _subdirs(dense.run_dir(workdir, config), _STEP)]
  out.append(Network("imp/rewind", "rewind", layout.rewind_point(workdir)))
  return out


def _imp_networks(workdir: str) -> List[Network]:
  root = layout.imp_dir(workdir)
  sources = sorted(os.listdir(root)) if os.path.isdir(root) else []
  out = []
  for source in sources:
    for k, folder in _subdirs(os.path.join(root, source), _ROUND):
      name, mask = f"imp/{source}/round_{k:02d}", layout.mask(workdir, source, k)
      out.append(Network(name, "imp", layout.final_params(workdir, source, k), mask))
      out.append(Network(f"{name}/distilled", "imp_distilled",
                         os.path.join(folder, "distilled_final"), mask))
  return out


def _analysis_networks(workdir: str) -> List[Network]:
  root = layout.analysis_dir(workdir)
  models = sorted(os.listdir(root)) if os.path.isdir(root) else []
  out = []
  for model in models:
    out += _copies(layout.analysis_model_dir(workdir, model), f"analysis/{model}", "branch",
                   _analysed_mask(workdir, model))
  inst = os.path.join(root, "instability")
  for model in sorted(os.listdir(inst)) if os.path.isdir(inst) else []:
    for step, folder in _subdirs(os.path.join(inst, model), _STEP):
      out += _copies(folder, f"instability/{model}/step_{step:07d}", "instability",
                     _analysed_mask(workdir, model))
  return out


def _init_networks(workdir: str, config) -> List[Network]:
  """The nets of new inits (lmcjax.analysis.inits' caches): dense, then masked."""
  out = []
  for i, folder in _subdirs(os.path.join(dense.run_dir(workdir, config), "inits"), _INIT):
    out.append(Network(f"inits/init_{i:02d}/dense", "new_init", os.path.join(folder, "final")))
  for i, folder in _subdirs(os.path.join(layout.analysis_dir(workdir), "inits"), _INIT):
    for model in sorted(os.listdir(folder)):
      # An aligned net keeps its permuted mask beside it; any other trained IMP's own.
      net, aligned = os.path.join(folder, model), model.endswith("_aligned")
      mask = (os.path.join(net, "mask") if aligned
              else _analysed_mask(workdir, model))
      out.append(Network(f"inits/init_{i:02d}/{model}", "new_init", os.path.join(net, "final"),
                         mask))
  return out


class Run:
  """A finished (or partly finished) workdir: its networks, data and results."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.config = read_config(workdir)
    found = (_dense_networks(workdir, self.config) + _imp_networks(workdir) +
             _analysis_networks(workdir) + _init_networks(workdir, self.config))
    self.networks: Dict[str, Network] = {n.name: n for n in found
                                         if checkpoints.exists(n.checkpoint)}

  @functools.cached_property
  def setup(self) -> runtime.Setup:
    """The run's data (normalised, on device), model and init: the templates."""
    return runtime.setup(self.config)

  @property
  def model(self):
    return self.setup.model

  def names(self, kind: str = "") -> List[str]:
    """The saved networks' names, of one kind (KINDS) or all."""
    if kind:
      validate.choice("network kind", kind, KINDS)
    return [name for name, n in self.networks.items() if not kind or n.kind == kind]

  def _network(self, name: str) -> Network:
    validate.require(name in self.networks, f"no saved network {name!r} in {self.workdir}; "
                     f"saved: {', '.join(self.networks) or 'none'}")
    return self.networks[name]

  def variables(self, name: str) -> Dict[str, PyTree]:
    """{'params', 'batch_stats'} of a network: model.apply(variables, x, train=False)."""
    like = {"params": self.setup.init_params, "batch_stats": self.setup.init_batch_stats}
    tree = checkpoints.load_tree(self._network(name).checkpoint, like, what=f"network {name!r}")
    return jax.tree.map(jnp.asarray, tree)

  def params(self, name: str) -> PyTree:
    return self.variables(name)["params"]

  def batch_stats(self, name: str) -> PyTree:
    return self.variables(name)["batch_stats"]

  def mask(self, name: str) -> Optional[PyTree]:
    """The 0/1 mask a network was trained under (None for a dense network)."""
    path = self._network(name).mask_checkpoint
    if path is None:
      return None
    tree = checkpoints.load_tree(path, self.setup.init_params, what=f"mask of {name!r}")
    return jax.tree.map(jnp.asarray, tree)

  def evaluate(self, name: str, split: str = "test") -> Dict[str, float]:
    """{'loss', 'accuracy'} of a network on the run's train or test split."""
    validate.choice("split", split, ("train", "test"))
    v = self.variables(name)
    return runtime.evaluate(self.setup, v["params"], v["batch_stats"], split)

  def distilled(self, path: str = "") -> Tuple[jnp.ndarray, jnp.ndarray, Dict[str, Any]]:
    """(images, labels, meta) of the distilled set (default the distill stage's),
    checked against the run's dataset and decoded as trained on."""
    return synthetic.load_decoded(synthetic.stage_path(self.workdir, path), self.setup.dataset)

  def _json(self, relpath: str) -> Dict[str, Any]:
    path = os.path.join(self.workdir, relpath)
    return logs.read_json(path) if os.path.exists(path) else {}

  @property
  def summary(self) -> Dict[str, Any]:
    """DIR/summary.json: each finished stage's summary."""
    return self._json("summary.json")

  @property
  def results(self) -> Dict[str, Any]:
    """DIR/results.json (the report stage's flat records; {} before it ran):
    pandas.json_normalize(run.results['barriers']) gives a tidy frame."""
    return self._json("results.json")

  @property
  def imp_rows(self) -> List[Dict[str, Any]]:
    """DIR/imp/imp.jsonl: one row per (source, round)."""
    return logs.read_jsonl(os.path.join(layout.imp_dir(self.workdir), "imp.jsonl"))

  def interpolation(self, model: str, split: str = "test", bn_mode: str = "interpolate"
                    ) -> Dict[str, Any]:
    """The recorded pairwise paths of an analysed model (interpolation_SPLIT_BN.json)."""
    path = os.path.join(layout.analysis_model_dir(self.workdir, model),
                        f"interpolation_{split}_{bn_mode}.json")
    validate.require(os.path.isfile(path), f"no recorded interpolation at {path}")
    return logs.read_json(path)


def load(workdir: str) -> Run:
  """The networks, data and results of a workdir written by launch/main.py."""
  return Run(workdir)

