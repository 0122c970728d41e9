"""Expected compute of a config's whole pipeline, from XLA's FLOP counts.

  python bench/estimate_cost.py --config configs/cifar10_convnet.py [--tflops 5,20]

Runs nothing (an npz dataset is read for its sizes; the others are rows of
DATASETS): it counts, from the config and with the stages' own step
arithmetic (train.total_steps, IMP's rounds per source, the analysis
targets), how many examples go through a train step or a forward pass in
each stage; the analysis stage row by row: its SGD-noise copies, then what
each enabled measure declares it computes (measures.Measure.cost, checked
against what the measures do in tests/test_planned_cost.py). It multiplies
by the compiled train step's and eval pass's
FLOPs per example (XLA cost analysis of the config's model under
config.train, augmentation included; every stage's train steps are priced at
that rate), and prints hours at the given achieved TFLOP/s. Distillation
steps are counted in train-step equivalents (a gradient-matching or
trajectory-matching step differentiates through a gradient: ~3 train steps
per example, see OUTER_FACTOR in lmcjax/distill/methods.py). Counts are checked
against a real run's records in tests/test_estimate_cost.py.

For a CPU budget, pass the rate --measured reports for a finished run of a
similar config on that CPU (e.g. --tflops 0.03 for 30 GFLOP/s).

It is an estimate. The achieved rate is the unknown: measure it on the target
accelerator with `python bench/bench_pipeline.py` (the GFLOP/s column) and pass
it as --tflops. Check of the method on this CPU: configs/default.py's measured
stage times against these FLOP counts give the achieved rates printed with
--measured DIR (a finished run's workdir).
"""
import collections
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
from lmcjax.analysis import measures  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import data as data_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import dense  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.distill import registry as distill_registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.distill import stage as distill_stage  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import engine  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import imp  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import logs  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import validate  # pylint: disable=g-import-not-at-top,wrong-import-position

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
  (augmentation included), from XLA's cost analysis."""
  model = models.create(model_cfg, num_classes)
  batch = spec.batch_size
  program = engine.train_program(model, spec, num_classes, 1000)
  step = program.step
  state = program.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1), jnp.zeros(image_shape))
  data = {"image": jnp.zeros((batch,) + tuple(image_shape)),
          "label": jnp.zeros((batch,), jnp.int32)}
  evaluate = jax.jit(train.make_eval_fn(model, batch))
  forward = evaluate.lower(state.params, state.batch_stats, data["image"], data["label"])
  return (bench_train_step.step_flops(step, state, data, None) / batch,
          bench_train_step.lowered_flops(forward) / batch)


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


def analysis_counts(config, n_train: int, n_test: int, num_classes: int, image_shape):
  """[(part, train-step examples, forward examples)] of the analysis stage:
  every analysed model's SGD-noise copies and their test errors (the stage's
  own), then what each enabled measure declares it computes
  (measures.Measure.cost; a job two measures share is counted at the first)."""
  a, d = config.analysis, config.distill
  f = distill_stage.factor_of(d)
  module = models.create(config.model, num_classes)
  params, batch_stats = jax.eval_shape(
      lambda: train.init_variables(module, jax.random.PRNGKey(0), image_shape))
  variables = {"params": params, "batch_stats": batch_stats}
  sizes = measures.Sizes({"train": n_train, "test": n_test,
                          "distilled": num_classes * d.ipc * f * f}, module, variables,
                         tuple(image_shape), num_classes)
  spec = config.train if a.reuse_config_train else a.branch_train
  start_at = analysis.targets.start_step(config, n_train)
  steps = train.total_steps(spec, n_train) - dense.start_step(config.imp.rewind_schedule, start_at)
  num_models, num_detailed = analysis.targets.planned_counts(config)
  copies = num_models * a.num_branches
  parts = [("copies", copies * steps * train.effective_batch(spec, n_train), copies * n_test)]
  for name, cost in measures.planned_costs(config, sizes, num_models, num_detailed):
    parts.append((name, sum(cost.train_examples.values()), sum(cost.forward_examples.values())))
  return parts


def dataset_sizes(config):
  """(train examples, test examples, image shape, classes) of config.data: an
  npz is read (it is local; no pickles), the others are DATASETS' rows; the
  subsets config.data asks for apply."""
  name = config.data.name
  if name == "npz":
    ds = data_lib.load_npz(config.data.npz_path, config.data.get("num_classes", 0))
    n_train, n_test = len(ds.y_train), len(ds.y_test)
    shape, classes = tuple(ds.image_shape), ds.num_classes
  else:
    validate.choice("data.name", name, tuple(DATASETS) + ("npz",))
    n_train, n_test, shape, classes = DATASETS[name]
  # Stratified subsets (lmcjax/data.py); 0 keeps the split whole.
  return (config.data.get("train_subset") or n_train, config.data.get("test_subset") or n_test,
          shape, classes)


def estimate(config):
  """Rows (stage, train-step examples, TFLOP, whether it is a part of the
  stage above) for config's stages, the analysis stage followed by its parts
  (analysis_counts), and the model's (train step, forward) FLOPs per example.
  Every stage's train steps are priced at config.train's per-example rate
  (its augmentation included); a forward example counts as 1/3 of one."""
  n_train, n_test, shape, classes = dataset_sizes(config)
  fpe_train, fpe_fwd = flops_per_example(config.model, config.train, classes, shape)
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
  rows = [row + (False,) for row in rows]
  if "analysis" in config.stages:
    parts = [(f"- {part}", trained + forward / 3, (trained * fpe_train + forward * fpe_fwd) / 1e12,
              True)
             for part, trained, forward in analysis_counts(config, n_train, n_test, classes,
                                                           shape)]
    rows.append(("analysis", sum(p[1] for p in parts), sum(p[2] for p in parts), False))
    rows += parts
  return rows, fpe_train, fpe_fwd


def measured_seconds(workdir: str):
  """Row name -> seconds a finished run spent on it: each stage not resumed
  (summary.json), and the analysis stage's parts (analysis/summary.json: the
  copies and each per-model measure summed over the models, each across-model
  measure)."""
  path = os.path.join(workdir, "summary.json")
  validate.require(os.path.exists(path), f"--measured {workdir!r} holds no summary.json: "
                   "not the workdir of a finished run")
  summary = logs.read_json(path)
  # A resumed stage's seconds are its last attempt's, which reloaded what the
  # earlier ones made: no measure of what the stage costs.
  out = {k: v["seconds"] for k, v in summary.items()
         if isinstance(v, dict) and "seconds" in v and not v.get("resumed")}
  path = os.path.join(workdir, "analysis", "summary.json")
  if "analysis" in out and os.path.exists(path):
    analysed = logs.read_json(path)
    parts = collections.Counter()
    for model in analysed["models"].values():
      for key, seconds in model.get("timings", {}).items():
        parts["copies" if key == "branches_s" else key[:-len("_s")]] += seconds
    for key, seconds in analysed.get("timings", {}).items():
      parts[key[:-len("_s")]] += seconds
    out.update({f"- {part}": seconds for part, seconds in parts.items()})
  return out


def _measured_cells(seconds, tflop: float):
  """[seconds, achieved GFLOP/s]; blank where nothing was measured, and no
  rate for a part that computes nothing."""
  if seconds is None:
    return ["", ""]
  return [f"{seconds:.0f}", f"{tflop * 1e3 / seconds:.1f}" if tflop and seconds else ""]


def main(argv):
  del argv
  config = FLAGS.config
  rates = [float(r) for r in FLAGS.tflops.split(",")]
  try:  # a bad config, dataset or workdir: one line, before anything compiles
    pipeline.check_config(config)
    measured = measured_seconds(FLAGS.measured) if FLAGS.measured else {}
    rows, fpe_train, fpe_fwd = estimate(config)
  except validate.InputError as e:
    sys.exit(f"lmcjax: error: {e}")
  print(f"# {config.data.name}, model {config.model.name}: {fpe_train / 1e6:.1f} MFLOP per example "
        f"per train step, {fpe_fwd / 1e6:.1f} per forward (XLA cost analysis)")
  head = (["stage", "train-step examples (a forward: 1/3)", "TFLOP"]
          + [f"hours @ {r:g} TFLOP/s" for r in rates])
  if measured:
    head += ["measured s", "achieved GFLOP/s"]
  print("| " + " | ".join(head) + " |")
  print("|" + " --- |" * len(head))
  total = 0.0
  for name, examples, tflop, part in rows:
    total += 0.0 if part else tflop
    cells = [name, f"{examples:,.0f}", f"{tflop:,.1f}"] + [f"{tflop / r / 3600:.2f}" for r in rates]
    if measured:
      cells += _measured_cells(measured.get(name), tflop)
    print("| " + " | ".join(cells) + " |")
  cells = ["total", "", f"{total:,.1f}"] + [f"{total / r / 3600:.2f}" for r in rates]
  if measured:
    stages = [name for name, _, _, part in rows if not part]
    # A total only where every stage was measured.
    seconds = (sum(measured[name] for name in stages)
               if all(name in measured for name in stages) else None)
    cells += _measured_cells(seconds, total)
  print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
  # Flags are defined here, not at import, so tests can import the counting
  # functions without registering --config.
  FLAGS = flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "config file", lock_config=True)
  flags.DEFINE_string("tflops", "5,20", "achieved TFLOP/s rates to print hours for")
  flags.DEFINE_string("measured", "", "a finished run's workdir: compare with its stage times")
  flags.mark_flags_as_required(["config"])
  app.run(main)
