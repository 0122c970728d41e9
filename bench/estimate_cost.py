"""Expected compute of a config's whole pipeline, from XLA's FLOP counts.

  python bench/estimate_cost.py --config configs/cifar10_convnet.py [--tflops 5,20]

Needs no data and runs nothing: it counts, from the config and with the
stages' own step arithmetic (train.total_steps, IMP's rounds per source, the
analysis targets), how many examples go through a train step or a forward
pass in each stage, multiplies by the compiled train step's and eval pass's
FLOPs per example (XLA cost analysis of the config's model), and prints hours
at the given achieved TFLOP/s. Distillation steps are counted in train-step
equivalents (a gradient-matching or trajectory-matching step differentiates
through a gradient: ~3 train steps per example, see OUTER_FACTOR).

It is an estimate. The achieved rate is the unknown: measure it on the target
accelerator with `python bench/bench_pipeline.py` (the GFLOP/s column) and pass
it as --tflops. Check of the method on this CPU: configs/default.py's measured
stage times against these FLOP counts give the achieved rates printed with
--measured DIR (a finished run's workdir).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import imp  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import logs  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.distill import stage as distill_stage  # pylint: disable=g-import-not-at-top,wrong-import-position

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
# Train-step equivalents per synthetic example of one outer step: the loss is
# a function of a gradient (GM) or of an unrolled SGD path (MTT), so its image
# gradient costs about a forward, a backward and a backward of the backward.
OUTER_FACTOR = 3.0


def flops_per_example(model_cfg, num_classes, image_shape, batch: int):
  """(train step, forward pass) FLOPs per example of model_cfg, from XLA."""
  model = models.create(model_cfg, num_classes)
  spec = default.train_spec()
  _, init, step = train.compiled_run(model, train.spec_key(spec), num_classes, 1000)
  state = init(jax.random.PRNGKey(0), jax.random.PRNGKey(1), jnp.zeros(image_shape))
  data = {"image": jnp.zeros((batch,) + tuple(image_shape)), "label": jnp.zeros((batch,), jnp.int32)}
  evaluate = jax.jit(train.make_eval_fn(model, batch))
  return (_flops(step.lower(state, data, None)) / batch,
          _flops(evaluate.lower(state.params, state.batch_stats, data["image"], data["label"])) / batch)


def _flops(lowered) -> float:
  analysis = lowered.compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", 0.0))


def run_examples(spec, n: int) -> int:
  """Examples through the train step in one run of `spec` on n examples."""
  return train.total_steps(spec, n) * train.effective_batch(spec, n)


def distill_counts(config, n_train: int, num_classes: int):
  """(train-step examples on the distillation net, on the eval net) of the distill stage."""
  d = config.distill
  if d.load_path:
    return 0.0, _distill_eval(d, num_classes, 1)
  f = distill_stage.factor_of(d)
  m = d[d.method]
  syn = d.ipc * f * f  # training images per class
  if d.method in ("dc", "idc"):
    per_iter = (num_classes * (m.batch_real + OUTER_FACTOR * syn) + m.inner_steps
                * min(m.batch_inner, n_train if m.inner_data == "real" else num_classes * syn))
    outer = m.iterations * per_iter
  elif d.method == "dm":
    outer = m.iterations * num_classes * (m.batch_real / 3 + syn)  # real side: forward only
  else:
    batch = m.batch_syn or num_classes * syn
    experts = m.num_experts * (m.max_start_epoch + m.expert_epochs) * n_train
    outer = m.iterations * m.syn_steps * batch * OUTER_FACTOR + experts
  return outer, _distill_eval(d, num_classes, syn)


def _distill_eval(d, num_classes, syn):
  sets = 1 + bool(d.eval.initial) + bool(d.eval.baseline)
  return sets * d.eval.num_seeds * run_examples(d.eval.spec, num_classes * syn)


def imp_counts(config, n_train: int, num_classes: int):
  """(real-data, distilled-data) train-step examples of the imp stage."""
  c = config.imp
  real_run = run_examples(config.train, n_train)
  real = real_run * (1 + len(c.sources) * c.rounds)  # round 0 (dense) is shared by sources
  f = distill_stage.factor_of(config.distill)
  n_syn = num_classes * config.distill.ipc * f * f
  rounds = sum(imp._distilled_rounds(c, s) for s in c.sources)  # pylint: disable=protected-access
  return real + imp.rewind_step(config, n_train) * config.train.batch_size, (
      rounds * run_examples(c.distilled_train, n_syn))


def analysis_counts(config, n_train: int, n_test: int):
  """(train-step examples, forward examples) of the analysis stage."""
  a = config.analysis
  models_analysed = int(a.include_dense) + (len(a.targets) or len(config.imp.sources))
  spec = config.train if a.reuse_config_train else a.branch_train
  train_examples = models_analysed * a.num_branches * run_examples(spec, n_train)
  split_size = {"train": n_train, "test": n_test, "distilled": 0}
  pairs = a.num_branches * (a.num_branches - 1) // 2
  interp = pairs * a.num_alphas * sum(split_size[s] for s in a.eval_splits)
  grid = len(a.landscape.kinds) * a.landscape.resolution ** 2 * split_size[a.landscape.split]
  h = a.hessian
  hess_batch = h.batch_size * h.num_batches if h.num_batches else split_size[h.split]
  # An HVP is a forward-over-backward: ~2 train steps; power iteration adds its own.
  hessian = (h.max_probes + h.power_iters) * hess_batch * 2 if h.enabled else 0
  return train_examples + hessian, models_analysed * (interp + grid)


def estimate(config):
  """Rows (stage, train-step examples, TFLOP) for config's stages."""
  n_train, n_test, shape, classes = DATASETS[config.data.name]
  batch = config.train.batch_size
  fpe_train, fpe_fwd = flops_per_example(config.model, classes, shape, batch)
  rows = []
  if "distill" in config.stages:
    outer, evals = distill_counts(config, n_train, classes)
    d_train, _ = flops_per_example(distill_stage.model_config(config), classes, shape, 64)
    rows.append(("distill", outer + evals, (outer + evals) * d_train / 1e12))
  if "train" in config.stages:
    ex = run_examples(config.train, n_train)
    rows.append(("train", ex, ex * fpe_train / 1e12))
  if "imp" in config.stages:
    real, distilled = imp_counts(config, n_train, classes)
    rows.append(("imp", real + distilled, (real + distilled) * fpe_train / 1e12))
  if "analysis" in config.stages:
    tr, fwd = analysis_counts(config, n_train, n_test)
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
    measured = {k: v["seconds"] for k, v in summary.items() if isinstance(v, dict) and "seconds" in v}
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
  print("| total | | " + f"{total:,.1f} | " + " | ".join(f"{total / r / 3600:.2f}" for r in rates) + " |")


if __name__ == "__main__":
  FLAGS = flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "config file", lock_config=True)
  flags.DEFINE_string("tflops", "5,20", "achieved TFLOP/s rates to print hours for")
  flags.DEFINE_string("measured", "", "a finished run's workdir: compare with its stage times")
  flags.mark_flags_as_required(["config"])
  app.run(main)
