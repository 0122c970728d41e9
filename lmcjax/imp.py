"""The IMP stage: iterative magnitude pruning with rewinding, per mask source.

Each source's properties (which data finds its masks, whether it draws them)
are declared in lmcjax/mask_sources.py. For each source in config.imp.sources,
round k = 0..R (none when R = 0):
  1. start from the rewind point theta_j (step j of the dense run), masked by
     mask_k (round 0 is dense);
  2. small-set rounds: train on the source's small set (the distilled set, or
     the real images it started from), a whole config.imp.distilled_train run
     from theta_j, the run whose weights are pruned;
  3. retrain on real data with config.train and evaluate: accuracy at sparsity
     1 - 0.8^k. In real-data rounds this run is also the one that is pruned.
     Round 0 is the dense run itself (lmcjax.dense: trained once, by the train
     stage), as in open_lth. With imp.rewind_schedule='continue' (Frankle et
     al.) rounds k >= 1 train the remaining T - j steps with the schedule
     continued at j; 'restart' trains a whole T-step run from theta_j.
     imp.retrain_rounds='analysed' retrains the sources whose masks come from
     a small set or a draw only at the rounds the analysis stage reads
     ('none': never), so finding R distilled masks costs R distilled trainings;
  4. prune the trained weights to mask_{k+1} (random source: draw it).

Every artefact lives where lmcjax.workdir says: the rewind point, each round's
mask and final params, and mid-training checkpoints. A round is finished when
its result.json marker exists; a finished round is never recomputed, and an
unfinished one resumes from its checkpoints, so SIGKILL at any moment followed
by the same command ends bit-identical to an uninterrupted run (on CPU).
"""
import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp

from lmcjax import checkpoints
from lmcjax import dense
from lmcjax import logs
from lmcjax import mask_costs
from lmcjax import mask_sources
from lmcjax import masks
from lmcjax import plots
from lmcjax import progress
from lmcjax import pruning
from lmcjax import rng
from lmcjax import runtime
from lmcjax import synthetic
from lmcjax import train
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.stages import base

PyTree = Any
# The declared sources in run order (lmcjax/mask_sources.py).
SOURCES = mask_sources.NAMES
RETRAIN_ROUNDS = ("all", "analysed", "none")
RESULTS_FILE = "imp.jsonl"
PLOT_STEM = "accuracy_vs_sparsity"
# ---------------------------------------------------------------- config


def check_config(config) -> None:
  """One-line errors for a bad config.imp, before any compute."""
  c = config.imp
  validate.require(len(c.sources) > 0, "imp.sources is empty")
  for source in c.sources:
    validate.choice("imp.sources entry", source, mask_sources.NAMES)
  validate.require(len(set(c.sources)) == len(c.sources),
                   f"imp.sources {tuple(c.sources)} repeats a source")
  validate.require(isinstance(c.rounds, int) and c.rounds >= 0,
                   f"imp.rounds must be an integer >= 0, got {c.rounds!r}")
  validate.fraction_open("imp.prune_fraction", c.prune_fraction)
  validate.choice("imp.method", c.method, pruning.METHODS)
  validate.require(isinstance(c.rewind_step, int) and c.rewind_step >= 0,
                   f"imp.rewind_step must be an integer >= 0, got {c.rewind_step!r}")
  validate.non_negative("imp.rewind_epochs", c.rewind_epochs)
  validate.require(not (c.rewind_step and c.rewind_epochs),
                   "set imp.rewind_step or imp.rewind_epochs, not both")
  validate.require(c.rewind_epochs <= config.train.epochs,
                   f"imp.rewind_epochs={c.rewind_epochs} is beyond the dense training's "
                   f"train.epochs={config.train.epochs}")
  validate.choice("imp.rewind_schedule", c.rewind_schedule, dense.SCHEDULES)
  validate.choice("imp.retrain_rounds", c.retrain_rounds, RETRAIN_ROUNDS)
  validate.require(c.retrain_rounds == "all" or c.rewind_non_prunable,
                   f"imp.retrain_rounds={c.retrain_rounds!r} needs imp.rewind_non_prunable=True: "
                   "the partial rewind carries each round's retrained variables over")
  validate.non_negative("imp.combined_distilled_rounds", c.combined_distilled_rounds)
  small_sets = mask_sources.small_sets_used(c)
  if small_sets:
    train.check_spec(c.distilled_train, "imp.distilled_train")
    if c.distilled_path:
      synthetic.load(c.distilled_path)  # existence and format; shape/classes need the dataset
  for name in small_sets:
    mask_sources.SMALL_SETS[name].check(config)


def rewind_step(config, num_train: int) -> int:
  """The dense-training step the rewind point is taken at; checked against its length."""
  c = config.imp
  dense_steps = dense.num_steps(config, num_train)
  step = c.rewind_step
  if c.rewind_epochs:
    step = dense.epoch_step(config, num_train, c.rewind_epochs, "imp.rewind_epochs")
  validate.require(step <= dense_steps, f"imp rewind step {step} is beyond the dense training's "
                   f"{dense_steps} steps (train.epochs={config.train.epochs})")
  return step


def retrained_rounds(config) -> Tuple[int, ...]:
  """The rounds imp.retrain_rounds='analysed' retrains on real data: those the
  configured stages read (config.needs.imp_rounds), else the last round."""
  return tuple(config.needs.imp_rounds) or (config.imp.rounds,)


def retrains(config, source: str, k: int) -> bool:
  """Whether round k of `source` is trained on real data (see the module doc):
  always where that run is the one pruned."""
  c = config.imp
  if (k == 0 or c.retrain_rounds == "all" or mask_sources.get(source).always_retrains
      or mask_sources.prunes_real_data(c, source, k)):
    return True
  return c.retrain_rounds == "analysed" and k in retrained_rounds(config)


def _distilled_rounds(c, source: str) -> int:
  """How many rounds (from round 0) of `source` find their mask on its small
  set (the distilled set or its starting images: the same size)."""
  return mask_sources.small_set_rounds(c, source)


# ---------------------------------------------------------------- rewinding


def round_start(rewind: Dict[str, PyTree], trained: Optional[Dict[str, PyTree]], mask: PyTree,
                prunable: PyTree, rewind_non_prunable: bool = True) -> Tuple[PyTree, PyTree]:
  """(params, batch_stats) a round starts from: the rewind point times the mask.

  With rewind_non_prunable=False (the seed paper's code) the non-prunable
  parameters and the BN statistics come from `trained`, the previous round's
  trained variables, when there is one. The result is a fresh copy: training
  donates its input buffers.
  """
  params, stats = rewind["params"], rewind["batch_stats"]
  if not rewind_non_prunable and trained is not None:
    params = jax.tree.map(lambda r, t, p: r if p else t, params, trained["params"], prunable)
    stats = trained["batch_stats"]
  params = jax.tree.map(lambda p, m: jnp.asarray(p) * m, params, mask)
  return params, jax.tree.map(jnp.array, stats)


def _variables_like(s: runtime.Setup) -> Dict[str, PyTree]:
  return {"params": s.init_params, "batch_stats": s.init_batch_stats}


def load_rewind(s: runtime.Setup, workdir: str) -> Tuple[PyTree, PyTree]:
  """The saved rewind point as (params, batch_stats); errors if missing or mismatched."""
  tree = checkpoints.load_tree(layout.rewind_point(workdir), _variables_like(s),
                               what="rewind point")
  return tree["params"], tree["batch_stats"]


def load_mask(s: runtime.Setup, workdir: str, source: str, round_index: int) -> PyTree:
  """Mask of `source` at round k (sparsity ~1 - 0.8^k); errors if missing or mismatched."""
  mask_sources.get(source)
  tree = checkpoints.load_tree(layout.mask(workdir, source, round_index), s.init_params,
                               what=f"{source} round {round_index} mask")
  return jax.tree.map(jnp.asarray, tree)


def _ensure_rewind(s: runtime.Setup, workdir: str, step: int, log) -> Dict[str, PyTree]:
  path = layout.rewind_point(workdir)
  if not checkpoints.exists(path):
    checkpoints.save_tree(path, dense.load(s, workdir, step, log))
  params, stats = load_rewind(s, workdir)
  return {"params": params, "batch_stats": stats}


# ---------------------------------------------------------------- one source


def _marker(workdir: str, source: str, k: int) -> str:
  return os.path.join(layout.round_dir(workdir, source, k), "result.json")


def _distilled_final(workdir: str, source: str, k: int) -> str:
  """Variables trained on the small set in round k, kept for the partial rewind."""
  return os.path.join(layout.round_dir(workdir, source, k), "distilled_final")


# The kind (seed path and checkpoint folder) of a small-set run. Every small
# set trains under the same one, so 'subset' sees the batch order and
# augmentation draws 'distilled' sees and differs from it in the images only.
SMALL_SET_RUN = "distilled"


class _SourceRun:
  """IMP for one mask source: rounds 0..R, resumable round by round."""

  def __init__(self, s, workdir, source, rewind, rewind_at, small_sets, log):
    self.s, self.c, self.workdir, self.source = s, s.config.imp, workdir, source
    self.declared = mask_sources.get(source)
    self.rewind, self.small, self.log = rewind, small_sets.get(self.declared.small_set), log
    self.small_rounds = mask_sources.small_set_rounds(self.c, source)
    self.retrain_start = dense.start_step(self.c.rewind_schedule, rewind_at)

  def mask(self, k: int) -> PyTree:
    if k == 0:
      return masks.ones_like(self.s.init_params)
    return load_mask(self.s, self.workdir, self.source, k)

  def next_mask(self, k: int, trained: Optional[runtime.RunResult], mask: PyTree) -> PyTree:
    """mask_{k+1} from round k's trained weights (or a random draw)."""
    c, prunable = self.c, self.s.prunable
    if not self.declared.random:
      scores = pruning.magnitude_scores(trained.state.params)
      return pruning.prune(scores, mask, prunable, c.prune_fraction, c.method)
    key = rng.named_key(self.s.config.seeds.init, "random_mask", k + 1)
    reference_source = mask_sources.random_reference(c, self.source)
    if reference_source:
      reference = load_mask(self.s, self.workdir, reference_source, k + 1)
      return pruning.random_with_layer_counts(key, reference, prunable)
    return pruning.prune(pruning.random_scores(key, self.s.init_params), mask, prunable,
                         c.prune_fraction, c.method)

  def train(self, spec, carry, mask, k, kind, images=None, labels=None,
            start_step: int = 0) -> runtime.RunResult:
    """One run of round k from the rewind point; `kind` names its seed path and checkpoints."""
    # A fresh start per run: train_run donates (consumes) the buffers it is given.
    params, stats = round_start(self.rewind, carry, mask, self.s.prunable,
                                self.c.rewind_non_prunable)
    ckpt = os.path.join(layout.train_checkpoints(self.workdir, self.source, k), kind)
    return runtime.train_run(self.s, spec, params, stats, mask, seed_path=("imp", kind, k),
                                stage=f"imp/{self.source}/{k}/{kind}", log=self.log,
                                images=images, labels=labels, checkpoint_dir=ckpt,
                                start_step=start_step)

  def retrain(self, carry, mask, k) -> Optional[runtime.RunResult]:
    """Real-data training of round k; round 0 is the dense run, shared by every source."""
    if k == 0:
      return dense.final(self.s, self.workdir, self.log)
    if not retrains(self.s.config, self.source, k):
      return None
    return self.train(self.s.config.train, carry, mask, k, "retrain", start_step=self.retrain_start)

  def run_round(self, k: int, carry: Optional[Dict[str, PyTree]]) -> Dict[str, Any]:
    """Trains round k, saves its final variables and mask_{k+1}; returns its marker."""
    mask = self.mask(k)
    finds_mask = k < self.c.rounds
    small_run = None
    if finds_mask and k < self.small_rounds:
      small_run = self.train(self.c.distilled_train, carry, mask, k, SMALL_SET_RUN,
                             self.small["images"], self.small["labels"])
      if not self.c.rewind_non_prunable:
        checkpoints.save_tree(_distilled_final(self.workdir, self.source, k),
                              _variables(small_run))
    result = self.retrain(carry, mask, k)
    if result is not None:
      checkpoints.save_tree(layout.final_params(self.workdir, self.source, k), _variables(result))
    prune_cost = None
    if finds_mask:
      pruned_run = small_run or result
      new_mask = self.next_mask(k, pruned_run, mask)
      checkpoints.save_tree(layout.mask(self.workdir, self.source, k + 1), new_mask)
      if not self.declared.random:
        prune_cost = dict(pruned_run.cost, data=self.declared.small_set if small_run else "real")
    report = masks.sparsity_report(mask, self.s.prunable)
    retrained = result is not None
    return {"source": self.source, "round": k, "sparsity": report["sparsity"],
            "retrained": retrained,
            "test_accuracy": result.test["accuracy"] if retrained else None,
            "test_loss": result.test["loss"] if retrained else None,
            "num_test": int(self.s.x_test.shape[0]),
            **(result.cost if retrained else train.data_cost(0, 1, 0)), "prune_run": prune_cost,
            # How well the net trained on the small set alone does (before retraining).
            "distilled_test_accuracy": small_run.test["accuracy"] if small_run else None,
            "layer_sparsity": {n: layer["sparsity"] for n, layer in report["layers"].items()}}

  def carry(self, k: int) -> Optional[Dict[str, PyTree]]:
    """Round k's trained variables that round k+1 inherits under the partial rewind."""
    if self.c.rewind_non_prunable:
      return None
    like = _variables_like(self.s)
    if k < self.small_rounds and k < self.c.rounds:
      return checkpoints.load_tree(_distilled_final(self.workdir, self.source, k), like)
    return checkpoints.load_tree(layout.final_params(self.workdir, self.source, k), like)

  def run(self) -> List[Dict[str, Any]]:
    if not self.c.rounds:  # no mask to find: not even the dense round 0 is trained
      return []
    if not checkpoints.exists(layout.mask(self.workdir, self.source, 0)):
      checkpoints.save_tree(layout.mask(self.workdir, self.source, 0), self.mask(0))
    markers = []
    shown = progress.Progress(f"imp {self.source}", self.c.rounds + 1, "rounds", every_s=0)
    for k in range(self.c.rounds + 1):
      marker = _marker(self.workdir, self.source, k)
      if not os.path.exists(marker):
        carry = self.carry(k - 1) if k > 0 else None
        logs.write_json(marker, self.run_round(k, carry))
      if not self.c.keep_train_checkpoints:
        # Also after a kill between the marker and the removal.
        shutil.rmtree(layout.train_checkpoints(self.workdir, self.source, k), ignore_errors=True)
      markers.append(logs.read_json(marker))
      shown.update(k + 1, _round_line(markers[-1]))
    return markers


def _round_line(marker: Dict[str, Any]) -> str:
  acc = marker["test_accuracy"]
  return (f"round {marker['round']} at sparsity {marker['sparsity']:.3f}: "
          + (f"test accuracy {acc:.4f}" if acc is not None else "not retrained"))


def _variables(result: runtime.RunResult) -> Dict[str, PyTree]:
  return {"params": result.state.params, "batch_stats": result.state.batch_stats}


# ---------------------------------------------------------------- the stage


def _load_small_sets(s: runtime.Setup, workdir: str) -> Dict[str, Dict[str, Any]]:
  """Every small set the configured sources train on, as decoded device arrays,
  checked against the real dataset (and the starting images against the set)."""
  distilled_path = synthetic.stage_path(workdir, s.config.imp.distilled_path)
  out = {}
  for name in mask_sources.small_sets_used(s.config.imp):
    small = mask_sources.SMALL_SETS[name]
    images, labels = synthetic.decoded(*small.load(distilled_path, s.dataset))
    out[name] = {"path": small.path(distilled_path), "images": images, "labels": labels,
                 "num_images": int(images.shape[0])}
  return out


def _random_masks(c) -> Optional[str]:
  """How the configured random source draws its masks, in words (None: no such source)."""
  drawn = [name for name in c.sources if mask_sources.get(name).random]
  if not drawn:
    return None
  reference = mask_sources.random_reference(c, drawn[0])
  return (f"per-layer counts of the {reference} masks" if reference
          else f"{c.method} random pruning")


def run_stage(s: runtime.Setup, workdir: str, log: logs.MetricsLog) -> Dict[str, Any]:
  """Runs IMP for every configured source; writes DIR/imp/imp.jsonl and the plot."""
  c = s.config.imp
  step = rewind_step(s.config, int(s.x_train.shape[0]))
  small_sets = _load_small_sets(s, workdir)
  rewind = _ensure_rewind(s, workdir, step, log)
  markers_by_source = {source: _SourceRun(s, workdir, source, rewind, step, small_sets, log).run()
                       for source in mask_sources.ordered(c.sources)}
  rows_by_source = {source: mask_costs.results_rows(m)
                    for source, m in markers_by_source.items()}
  rows = [r for source in rows_by_source for r in rows_by_source[source]]
  logs.write_jsonl(os.path.join(layout.imp_dir(workdir), RESULTS_FILE), rows)
  plot_path = plots.plot_accuracy_vs_sparsity(
      os.path.join(layout.imp_dir(workdir), PLOT_STEM), rows, SOURCES)
  return {
      "rewind_step": step, "rewind_schedule": c.rewind_schedule, "rounds": c.rounds,
      "method": c.method, "retrain_rounds": c.retrain_rounds,
      "random_masks": _random_masks(c),
      "distilled_set": (synthetic.stage_path(workdir, c.distilled_path) if small_sets
                        else None),
      "small_sets": {name: small["path"] for name, small in small_sets.items()},
      "accuracy": {src: [[round(r["sparsity"], 4), r["test_accuracy"]] for r in rows_by_source[src]
                         if r["retrained"]] for src in rows_by_source},
      "data_cost": mask_costs.cost_summary(markers_by_source),
      "results": os.path.join(layout.imp_dir(workdir), RESULTS_FILE), "plot": plot_path,
  }


# A change in any field read, or in the distill stage's inputs, moves DIR/imp
# aside and starts over. The rounds later stages read decide which rounds are
# retrained (needs.imp_rounds).
STAGE = base.Stage(
    "imp", run_stage, check_config,
    reads=("seeds", "data", "model", "train", "prune", "eval_batch_size", "parallel", "stages",
           "imp", "needs.imp_rounds"),
    depends_on=("distill",), output_dirs=lambda workdir: (layout.imp_dir(workdir),),
    rewind_steps=lambda config, num_train: (rewind_step(config, num_train),))
