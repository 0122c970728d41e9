"""Nets from other init seeds, shared by the cross-seed and mask-transfer measures.

Init 0 is the config's own init (runtime.setup: rng.named_key(seeds.init,
'init')); init i >= 1 folds i into that key. Every init's dense run is
config.train on the real training set, like the original dense run (init 0's
IS it: lmcjax.dense), with its own data order (seed path ('dense', 'init', i)).

A masked net of init i starts like IMP's retraining: from step j of init i's
own dense run (j = IMP's rewind step; j = 0 is the init itself) times the
mask, and trains config.train's remaining steps (imp.rewind_schedule
'continue') or a whole run ('restart'). Its seed path ('init', i, MODEL) is
the same for a mask as it is and for the mask permuted into init i's basin,
so the two differ only in the mask.

Caches, so both measures and a resumed run reuse every net:
  dense runs  DIR/dense/KEY/inits/init_II/{final, step_JJJJJJJ}: keyed like
              the dense run's own snapshots (lmcjax.dense), by the config
              sections they depend on, so they survive analysis changes;
  masked nets DIR/analysis/inits/init_II/MODEL[_aligned]/{final, mask}: they
              depend on IMP's masks, so they live (and are moved aside) with
              the analysis stage.
Unfinished runs resume from checkpoints beside them.
"""
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from lmcjax import checkpoints
from lmcjax import dense
from lmcjax import imp
from lmcjax import masks
from lmcjax import models
from lmcjax import modelid
from lmcjax import rng
from lmcjax import runtime
from lmcjax import train
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.analysis import measures
from lmcjax.analysis import targets
from lmcjax.connectivity import permute
from lmcjax.connectivity import structure as structure_lib

PyTree = Any
Variables = Dict[str, PyTree]
# Side of the abstract image a config's model is traced on in `check`: only
# shapes are made (jax.eval_shape), and the structure depends on channels only.
_CHECK_SIDE = 64


# ---------------------------------------------------------------- config


def built_model(config):
  """The config's model and its abstract variables (no parameters are made)."""
  module = models.create(config.model, num_classes=10)
  image = jnp.zeros((1, _CHECK_SIDE, _CHECK_SIDE, 3), jnp.float32)
  variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), image, train=False))
  return module, dict(variables)


def check_section(config, name: str) -> None:
  """num_inits, sources and rounds of section `name` of config.analysis, and
  that the config's model declares its permutation structure (one line each)."""
  c = config.analysis[name]
  validate.require(isinstance(c.num_inits, int) and c.num_inits >= 2,
                   f"analysis.{name}.num_inits must be an integer >= 2 (the original init and "
                   f"at least one other), got {c.num_inits!r}")
  for source in c.sources:
    validate.choice(f"analysis.{name}.sources entry", source, imp.SOURCES)
    validate.require(source in config.imp.sources, f"analysis.{name}.sources entry {source!r}: "
                     f"IMP did not run it (imp.sources={tuple(config.imp.sources)})")
  for r in c.rounds:
    targets.check_round(config, r, f"analysis.{name}.rounds entry {r!r}")
  analysed = targets.analysed_rounds(config)
  for source in c.sources:
    validate.require(source in analysed, f"analysis.{name}.sources entry {source!r}: the "
                     f"analysis does not analyse it (analysis.targets={tuple(analysed)})")
  for source in (tuple(c.sources) or tuple(analysed)):
    for r in c.rounds:
      validate.require(r in analysed[source], f"analysis.{name}.rounds entry {r} is not an "
                       f"analysed round of {source!r} (analysed: {sorted(analysed[source])}); "
                       "add it to analysis.rounds")
  validate.positive(f"analysis.{name}.chunk_examples", c.chunk_examples)
  module, variables = built_model(config)
  structure_lib.structure_of(module, variables)


def planned_models(config, c) -> List[modelid.ModelId]:
  """The masks section c measures, from the config alone, as `selected` picks
  them from the analysed models (bench/estimate_cost.py)."""
  analysed = targets.planned_rounds(config)
  return [modelid.ModelId(src, r) for src in (tuple(c.sources) or tuple(analysed))
          for r in (tuple(c.rounds) or (max(analysed[src]),))]


def planned_nets(config, sizes: measures.Sizes, num_inits: int,
                 planned: Sequence[modelid.ModelId], aligned: bool, with_dense: bool
                 ) -> Tuple[Dict[Tuple, int], Dict[Tuple, int]]:
  """({net key: train-step examples}, {matching key: forward examples}) of what
  `Inits` trains and matches for these masks, keyed as it caches them, so
  that measures sharing a net count it once (measures.Cost):
    init i's dense run (i >= 1, with_dense; init 0's is the train stage's);
    each mask's net of every init (aligned: permuted into inits i >= 1, by
    activation matching of the dense nets over the training split);
    the prefix of init i's dense run up to IMP's rewind step, where that is
    not 0: Inits trains it only where no whole dense run came first, and it
    is counted wherever it may run (an over-estimate by the prefix)."""
  n = sizes.examples["train"]
  steps, batch = train.total_steps(config.train, n), train.effective_batch(config.train, n)
  rewind = imp.rewind_step(config, n)
  nets = {("inits", "dense", i): steps * batch for i in range(1, num_inits) if with_dense}
  masked = (steps - dense.start_step(config.imp.rewind_schedule, rewind)) * batch
  moves = {}
  for model in planned:
    for i in range(num_inits):
      nets[("inits", "masked", i, model.name, aligned and i > 0)] = masked
      if i > 0 and rewind > 0:
        nets[("inits", "dense_prefix", i)] = rewind * batch
      if i > 0 and aligned:
        moves[("inits", "move", i, model.name)] = 2 * n
  return nets, moves


def selected(c, analysed: Sequence[measures.Analysed], what: str
             ) -> List[Tuple[modelid.ModelId, PyTree]]:
  """(model, mask) of each analysed mask of c.sources (() = every analysed
  source) at c.rounds (() = the source's sparsest analysed round)."""
  masked = [m for m in analysed if m.mask is not None]
  present = list(dict.fromkeys(m.model.source for m in masked))
  for src in c.sources:
    validate.require(src in present, f"analysis.{what}.sources entry {src!r} has no analysed "
                     f"mask (analysed sources: {present})")
  out = []
  for src in (tuple(c.sources) or present):
    mine = {m.model.round: m for m in masked if m.model.source == src}
    for r in (tuple(c.rounds) or (max(mine),)):
      validate.require(r in mine, f"analysis.{what}.rounds entry {r} is not an analysed round "
                       f"of {src!r} (analysed: {sorted(mine)})")
      out.append((mine[r].model, mine[r].mask))
  return out


# ---------------------------------------------------------------- alignment


def mask_into_basin(module, structure, origin: Variables, target: Variables, mask: PyTree,
                    images, chunk_examples: int) -> PyTree:
  """`mask`, found in the basin of the dense net `origin`, permuted into the
  basin of the dense net `target` (Adnan et al. 2025).

  activation_matching(A, B) maps B's units onto A's, so with A = target and
  B = origin, permuting origin's mask by it gives the mask that target's units
  would carry: if target is a permutation of origin, exactly that permutation
  of the mask.
  """
  # Imported when used: it imports scipy.optimize, ~0.7 s on every lmcjax start otherwise.
  from lmcjax.connectivity import activation_matching  # pylint: disable=g-import-not-at-top
  perm, _ = activation_matching.activation_matching(module, structure, target, origin, images,
                                                    chunk_examples=chunk_examples)
  return permute.permute(structure, perm, origin["params"], mask=mask)[2]


# ---------------------------------------------------------------- the nets


def _variables(state) -> Variables:
  return {"params": state.params, "batch_stats": state.batch_stats}


class Inits:
  """The nets of one workdir's inits, trained on first use and cached on disk.

  Args:
    s: runtime.Setup; wd: the workdir; log: the run's metrics log.
    chunk_examples: examples per step of activation matching.
  """

  def __init__(self, s: runtime.Setup, wd: str, log=None, chunk_examples: int = 256):
    self.s, self.wd, self.log, self.chunk_examples = s, wd, log, chunk_examples
    self.like = {"params": s.init_params, "batch_stats": s.init_batch_stats}
    self.rewind_step = imp.rewind_step(s.config, int(s.x_train.shape[0]))
    self.structure = structure_lib.structure_of(s.model, self.like)

  # Init i's dense run.

  def _dense_dir(self, index: int) -> str:
    return os.path.join(dense.run_dir(self.wd, self.s.config), "inits", f"init_{index:02d}")

  def _snapshot(self, index: int, step: int) -> str:
    return os.path.join(self._dense_dir(index), f"step_{step:07d}")

  def init(self, index: int) -> Variables:
    """Init `index`'s variables (a fresh copy: training donates its inputs)."""
    if index == 0:
      return jax.tree.map(jnp.array, self.like)
    key = jax.random.fold_in(rng.named_key(self.s.config.seeds.init, "init"), index)
    params, stats = train.init_variables(self.s.model, key, self.s.dataset.image_shape)
    return {"params": params, "batch_stats": stats}

  def _train_dense(self, index: int, stop_step: Optional[int] = None):
    """Init `index`'s dense run (to stop_step), saving the rewind step on the way.
    Only the whole run checkpoints: a prefix run must not resume past its end."""
    wanted = self.rewind_step

    def snapshot(done, state, metrics):
      del metrics
      if done == wanted:
        checkpoints.save_tree(self._snapshot(index, done), _variables(state))

    start = self.init(index)
    ckpt = os.path.join(self._dense_dir(index), "ckpt") if stop_step is None else ""
    return runtime.train_run(self.s, self.s.config.train, start["params"], start["batch_stats"],
                             None, seed_path=("dense", "init", index),
                             stage=f"inits/{index}/dense", log=self.log, checkpoint_dir=ckpt,
                             stop_step=stop_step, on_step=snapshot, evaluate_test=False)

  def dense(self, index: int) -> Variables:
    """Init `index`'s trained dense net (init 0: the original dense run)."""
    if index == 0:
      return _variables(dense.final(self.s, self.wd, self.log).state)
    path = os.path.join(self._dense_dir(index), "final")
    if not checkpoints.exists(path):
      checkpoints.save_tree(path, _variables(self._train_dense(index).state))
      shutil.rmtree(os.path.join(self._dense_dir(index), "ckpt"), ignore_errors=True)
    return checkpoints.load_tree(path, self.like, what=f"dense net of init {index}")

  def rewind_point(self, index: int) -> Variables:
    """Step j (IMP's rewind step) of init `index`'s dense run; j = 0: the init."""
    step = self.rewind_step
    if step == 0:
      return self.init(index)
    if index == 0:
      return dense.load(self.s, self.wd, step, self.log)
    if not checkpoints.exists(self._snapshot(index, step)):
      self._train_dense(index, stop_step=step)
    return checkpoints.load_tree(self._snapshot(index, step), self.like,
                                 what=f"rewind point of init {index}")

  # Masked nets.

  def _masked_dir(self, index: int, model: modelid.ModelId, aligned: bool) -> str:
    name = model.name + ("_aligned" if aligned and index > 0 else "")
    return os.path.join(layout.analysis_dir(self.wd), "inits", f"init_{index:02d}", name)

  def matching_images(self):
    """Activation matching runs on the whole training split (chunked)."""
    return self.s.x_train

  def mask(self, index: int, model: modelid.ModelId, mask: PyTree, aligned: bool) -> PyTree:
    """The mask init `index` trains under: `mask` as it is, or (aligned) permuted
    from init 0's basin into init `index`'s, saved so a rerun trains the same."""
    if not aligned or index == 0:
      return mask
    path = os.path.join(self._masked_dir(index, model, aligned), "mask")
    if not checkpoints.exists(path):
      moved = mask_into_basin(self.s.model, self.structure, self.dense(0), self.dense(index),
                              mask, self.matching_images(), self.chunk_examples)
      checkpoints.save_tree(path, moved)
    return checkpoints.load_tree(path, mask, what=f"{model.name} mask aligned to init {index}")

  def sparse(self, index: int, model: modelid.ModelId, mask: PyTree,
             aligned: bool = False) -> Tuple[Variables, PyTree]:
    """(variables, mask) of init `index` trained under `mask` (aligned: the mask
    permuted into its basin) from its rewind point (module doc)."""
    mask = self.mask(index, model, mask, aligned)
    folder = self._masked_dir(index, model, aligned)
    path = os.path.join(folder, "final")
    if not checkpoints.exists(path):
      start = self.rewind_point(index)
      result = runtime.train_run(
          self.s, self.s.config.train, start["params"], start["batch_stats"], mask,
          seed_path=("init", index, model.name), stage=f"inits/{index}/{model.name}",
          log=self.log, checkpoint_dir=os.path.join(folder, "ckpt"),
          start_step=dense.start_step(self.s.config.imp.rewind_schedule, self.rewind_step),
          evaluate_test=False)
      checkpoints.save_tree(path, _variables(result.state))
      shutil.rmtree(os.path.join(folder, "ckpt"), ignore_errors=True)
    return checkpoints.load_tree(path, self.like, what=f"{model.name} of init {index}"), mask

  def accuracy(self, variables: Variables) -> float:
    return runtime.evaluate(self.s, variables["params"], variables["batch_stats"])["accuracy"]


def start_text(s) -> str:
  """Where the nets of other inits start, in words, for the report."""
  step = imp.rewind_step(s.config, int(s.x_train.shape[0]))
  if step == 0:
    return ("Every net of init i trains config.train from init i itself (IMP's rewind step "
            "is 0), the masked ones under their mask.")
  how = ("the remaining steps with the schedule continued"
         if s.config.imp.rewind_schedule == "continue" else "a whole run from there")
  return (f"Dense nets train config.train from their init; masked nets of init i start, "
          f"like IMP's retraining, from step {step} of init i's own dense run (IMP's rewind "
          f"step) times the mask and train {how}.")


def sparsity(s, mask: Optional[PyTree]) -> float:
  return 0.0 if mask is None else masks.sparsity(mask, s.prunable)
