"""Expected compute of a config's whole pipeline, from XLA's FLOP counts.

  python bench/estimate_cost.py --config configs/cifar10_convnet.py [--tflops 5,20]

Needs no data and runs nothing: it counts, from the config and with the
stages' own step arithmetic (train.total_steps, IMP's rounds per source, the
analysis targets), how many examples go through a train step or a forward
pass in each stage, multiplies by the compiled train step's and eval pass's
FLOPs per example (XLA cost analysis of the config's model under
config.train, augmentation included; every stage's train steps are priced at
that rate), and prints hours at the given achieved TFLOP/s. Distillation
steps are counted in train-step equivalents (a gradient-matching or
trajectory-matching step differentiates through a gradient: ~3 train steps
per example, see OUTER_FACTOR in lmcjax/distill/methods.py). Counts are checked
against a real run's records in tests/test_estimate_cost.py.

It is an estimate. The achieved rate is the unknown: measure it on the target
accelerator with `python bench/bench_pipeline.py` (the GFLOP/s column) and pass
it as --tflops. Check of the method on this CPU: configs/default.py's measured
stage times against these FLOP counts give the achieved rates printed with
--measured DIR (a finished run's workdir).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

import bench_train_step  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import analysis  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import dense  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.distill import registry as distill_registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.distill import stage as distill_stage  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import engine  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import imp  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import logs  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

# name -> (train examples, test examples, image shape, classes); mnist5k is the default's split.
DATASETS = {
    "mnist5k": (4000, 1000, (28, 28, 1), 10),
    "digits": (1437, 360, (8, 8, 1), 10),
    "mnist": (60000, 10000, (28, 28, 1), 10),
    "fashion_mnist": (60000, 10000, (28, 28, 1), 10),
    "cifar10": (50000, 10000, (32, 32, 3), 10),
    "cifar100": (50000, 10000, (32, 32, 3), 100),
    "svhn_cropped": (73257, 26032, (32, 32, 3), 10),
}


def flops_per_example(model_cfg, spec, num_classes, image_shape):
  """(train step, forward pass) FLOPs per example of model_cfg under spec
  (augmentation included), from XLA's cost analysis, and its parameter count."""
  model = models.create(model_cfg, num_classes)
  batch = spec.batch_size
  program = engine.train_program(model, spec, num_classes, 1000)
  step = program.step
  state = program.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1), jnp.zeros(image_shape))
  data = {"image": jnp.zeros((batch,) + tuple(image_shape)),
          "label": jnp.zeros((batch,), jnp.int32)}
  evaluate = jax.jit(train.make_eval_fn(model, batch))
  forward = evaluate.lower(state.params, state.batch_stats, data["image"], data["label"])
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  return (bench_train_step.step_flops(step, state, data, None) / batch,
          bench_train_step.lowered_flops(forward) / batch, num_params,
          bool(jax.tree.leaves(state.batch_stats)))


def run_examples(spec, n: int) -> int:
  """Examples through the train step in one run of `spec` on n examples."""
  return train.total_steps(spec, n) * train.effective_batch(spec, n)


def distill_counts(config, n_train: int, num_classes: int):
  """(train-step examples on the distillation net, on the eval net) of the distill stage."""
  d = config.distill
  f = distill_stage.factor_of(d)
  syn = d.ipc * f * f  # training images per class
  if d.load_path:  # no distillation; a loaded set is assumed to hold d.ipc per class
    return 0.0, _distill_eval(d, num_classes, syn, d.ipc, initial=False)
  outer = distill_registry.get(d.method).train_examples(d[d.method], num_classes, syn, n_train)
  return outer, _distill_eval(d, num_classes, syn, d.ipc, initial=d.eval.initial)


def _distill_eval(d, num_classes, syn, ipc, initial):
  """The distilled set (and its init) decode to syn per class; the random
  baseline has the stored size, ipc per class (distill/stage.py evaluate_set)."""
  decoded = (1 + bool(initial)) * run_examples(d.eval.spec, num_classes * syn)
  baseline = bool(d.eval.baseline) * run_examples(d.eval.spec, num_classes * ipc)
  return d.eval.num_seeds * (decoded + baseline)


def imp_counts(config, n_train: int, num_classes: int):
  """(real-data, distilled-data) train-step examples of the imp stage.

  Round 0 is the dense run and the rewind point a state of it (lmcjax/dense.py):
  the train stage trains both when it runs, else IMP does. Rounds k >= 1 are
  retrained where imp.retrains says, each the remaining steps from the rewind
  point under the 'continue' schedule.
  """
  c = config.imp
  if not c.rounds:
    return 0, 0
  batch = train.effective_batch(config.train, n_train)
  steps, rewind = train.total_steps(config.train, n_train), imp.rewind_step(config, n_train)
  retrained = sum(imp.retrains(config, src, k) for src in c.sources for k in range(1, c.rounds + 1))
  real = retrained * (steps - dense.start_step(c.rewind_schedule, rewind)) * batch
  if "train" not in config.stages:
    real += (steps + rewind) * batch
  f = distill_stage.factor_of(config.distill)
  n_syn = num_classes * config.distill.ipc * f * f
  rounds = sum(imp._distilled_rounds(c, s) for s in c.sources)  # pylint: disable=protected-access
  return real, rounds * run_examples(c.distilled_train, n_syn)


def analysed_models(config) -> int:
  """How many models the analysis stage analyses: dense, plus every IMP source at
  each analysed round (default its last; analysis.targets) unless targets are given."""
  a = config.analysis
  if a.targets:
    targets = len(a.targets)
  elif "imp" in config.stages and config.imp.rounds > 0:
    targets = len(config.imp.sources) * max(1, len(a.rounds))
  else:
    targets = 0
  return int(a.include_dense) + targets


def analysis_counts(config, n_train: int, n_test: int, num_classes: int, num_params: int,
                    has_bn: bool):
  """(train-step examples, forward examples) of the analysis stage."""
  a, d = config.analysis, config.distill
  f = distill_stage.factor_of(d)
  size = {"train": n_train, "test": n_test, "distilled": num_classes * d.ipc * f * f}
  spec = config.train if a.reuse_config_train else a.branch_train
  branches = a.num_branches * run_examples(spec, n_train)
  pairs = a.num_branches * (a.num_branches - 1) // 2
  points = pairs * analysis.interpolation.alphas(a).size
  modes = len(a.bn_modes) if has_bn else 1
  interp = points * modes * sum(size[s] for s in a.eval_splits)
  if has_bn and "reset" in a.bn_modes:  # BN statistics recomputed at every alpha
    interp += points * len(a.eval_splits) * a.bn_reset_batches * a.bn_reset_batch_size
  grid = sum(a.landscape.resolution ** (1 if kind == "random_1d" else 2)
             for kind in a.landscape.kinds) * size[a.landscape.split]
  h = a.hessian
  hess_batch = h.batch_size_examples * h.num_batches if h.num_batches else size[h.split]
  # An HVP is a forward-over-backward, ~2 train steps; the GGN diagonal one
  # backward pass per class; Lanczos at most lanczos_iters HVPs for the net
  # and for each kernel block (3 kernels, as LeNet-300-100: an assumption);
  # the exact diagonal one HVP per parameter on small models.
  probes = 0 if h.method == "ggn" else h.max_probes
  lanczos = h.lanczos_iters * (1 + (3 if h.layer_eigenvalues else 0))
  density = h.density_probes * h.density_steps if h.density else 0
  hvps = probes + lanczos + density + (num_params if num_params <= h.exact_max_params else 0)
  hessian = (hvps * 2 + num_classes) * hess_batch if h.enabled else 0
  per_model = branches + hessian, interp + grid
  inst = instability_counts(config, n_train, size)
  return tuple(analysed_models(config) * x + y for x, y in zip(per_model, inst))


def instability_counts(config, n_train: int, size) -> tuple:
  """(train-step, forward) examples of the instability curve: per model and
  rewind epoch, copies training the remaining steps and their pairwise paths;
  the point at the analysis' own start reuses its copies."""
  a = config.analysis
  c = a.instability
  if not c.enabled:
    return 0, 0
  masked = len(config.imp.sources) * max(1, len(c.rounds)) if config.imp.rounds else 0
  models = int(c.include_dense) + masked
  batch = train.effective_batch(config.train, n_train)
  steps = train.total_steps(config.train, n_train)
  start_at = analysis.targets.start_step(config, n_train)
  trained = forwards = 0
  for epoch in c.rewind_epochs:
    k = dense.epoch_step(config, n_train, epoch)
    if k == start_at and analysis.instability.reuses_analysis_copies(a):
      continue
    trained += c.num_copies * (steps - dense.start_step(config.imp.rewind_schedule, k)) * batch
    forwards += c.num_copies * (c.num_copies - 1) // 2 * c.num_alphas * size[c.split]
  return models * trained, models * forwards


def estimate(config):
  """Rows (stage, train-step examples, TFLOP) for config's stages, and the
  model's (train step, forward) FLOPs per example. Every stage's train steps
  are priced at config.train's per-example rate (its augmentation included)."""
  n_train, n_test, shape, classes = DATASETS[config.data.name]
  n_train = config.data.get("train_subset") or n_train  # stratified subsets (lmcjax/data.py)
  n_test = config.data.get("test_subset") or n_test
  fpe_train, fpe_fwd, num_params, has_bn = flops_per_example(config.model, config.train, classes,
                                                            shape)
  rows = []
  if "distill" in config.stages:
    outer, evals = distill_counts(config, n_train, classes)
    d_train = flops_per_example(distill_stage.model_config(config), config.train, classes, shape)[0]
    rows.append(("distill", outer + evals, (outer + evals) * d_train / 1e12))
  if "train" in config.stages:
    ex = run_examples(config.train, n_train)
    rows.append(("train", ex, ex * fpe_train / 1e12))
  if "imp" in config.stages:
    ex = sum(imp_counts(config, n_train, classes))
    rows.append(("imp", ex, ex * fpe_train / 1e12))
  if "analysis" in config.stages:
    tr, fwd = analysis_counts(config, n_train, n_test, classes, num_params, has_bn)
    rows.append(("analysis", tr + fwd / 3, (tr * fpe_train + fwd * fpe_fwd) / 1e12))
  return rows, fpe_train, fpe_fwd


def main(argv):
  del argv
  config = FLAGS.config
  rates = [float(r) for r in FLAGS.tflops.split(",")]
  rows, fpe_train, fpe_fwd = estimate(config)
  measured = {}
  if FLAGS.measured:
    summary = logs.read_json(os.path.join(FLAGS.measured, "summary.json"))
    measured = {k: v["seconds"] for k, v in summary.items()
                if isinstance(v, dict) and "seconds" in v}
  print(f"# {config.data.name}, model {config.model.name}: {fpe_train / 1e6:.1f} MFLOP per example "
        f"per train step, {fpe_fwd / 1e6:.1f} per forward (XLA cost analysis)")
  head = ["stage", "train-step examples", "TFLOP"] + [f"hours @ {r:g} TFLOP/s" for r in rates]
  if measured:
    head += ["measured s", "achieved GFLOP/s"]
  print("| " + " | ".join(head) + " |")
  print("|" + " --- |" * len(head))
  total = 0.0
  for name, examples, tflop in rows:
    total += tflop
    cells = [name, f"{examples:,.0f}", f"{tflop:,.1f}"] + [f"{tflop / r / 3600:.2f}" for r in rates]
    if measured and name in measured:
      cells += [f"{measured[name]:.0f}", f"{tflop * 1e3 / measured[name]:.1f}"]
    print("| " + " | ".join(cells) + " |")
  print("| total | | " + f"{total:,.1f} | "
        + " | ".join(f"{total / r / 3600:.2f}" for r in rates) + " |")


if __name__ == "__main__":
  # Flags are defined here, not at import, so tests can import the counting
  # functions without registering --config.
  FLAGS = flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "config file", lock_config=True)
  flags.DEFINE_string("tflops", "5,20", "achieved TFLOP/s rates to print hours for")
  flags.DEFINE_string("measured", "", "a finished run's workdir: compare with its stage times")
  flags.mark_flags_as_required(["config"])
  app.run(main)
