"""The 'distill' stage: config checks, the outer loop, files and evaluation."""
import json
import os
import time
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import augment
from lmcjax import execution as execution_lib
from lmcjax.distill import core
from lmcjax.distill import evaluate
from lmcjax.distill import methods
from lmcjax.distill import registry
from lmcjax import logs
from lmcjax import models
from lmcjax import plots
from lmcjax import progress
from lmcjax import rng
from lmcjax import synthetic
from lmcjax import train
from lmcjax import validate
from lmcjax import workdir as workdir_lib
from lmcjax.stages import base

def model_config(config):
  """The distillation network's config: config.distill.model, or config.model if its name is ''."""
  return config.distill.model if config.distill.model.name else config.model


def factor_of(d) -> int:
  """The multi-formation factor of config.distill's method (IDC: each stored
  image decodes to factor^2 training images)."""
  return registry.get(d.method).factor(d[d.method])


def check_config(config) -> None:
  """Every distill value that can be checked without data, before any compute."""
  d = config.distill
  method = registry.get(d.method)
  validate.require(isinstance(d.ipc, int) and d.ipc >= 1,
                   f"distill.ipc must be an integer >= 1, got {d.ipc!r}")
  validate.choice("distill.init", d.init, ("real", "noise"))
  mcfg = model_config(config)
  models.check_config(mcfg, "distill.model" if d.model.name else "model")
  validate.require(not models.info_for_config(mcfg).keeps_running_stats,
                   f"distill.model {mcfg.name!r} uses BatchNorm; distillation needs "
                   "instance/layer/no norm (e.g. convnet with norm=instance)")
  validate.choice("distill.augment.kind", d.augment.kind, ("none", "dsa"))
  augment.check_config(d.augment)
  validate.require(d.augment.cutmix_prob == 0, "distill.augment.cutmix_prob must be 0: "
                   f"CutMix mixes labels, which matching cannot, got {d.augment.cutmix_prob!r}")
  validate.non_negative("distill.log_every", d.log_every)
  validate.choice("distill.execution", d.execution, execution_lib.EXECUTIONS)
  m = d[d.method]
  validate.positive(f"distill.{d.method}.iterations", m.iterations)
  validate.choice(f"distill.{d.method}.optimizer", m.optimizer, ("sgd", "adam"))
  validate.positive(f"distill.{d.method}.lr_images", m.lr_images)
  method.check(m, f"distill.{d.method}")
  validate.positive("distill.eval.num_seeds", d.eval.num_seeds)
  train.check_spec(d.eval.spec, "distill.eval.spec")
  if d.load_path:
    validate.require(os.path.isfile(d.load_path), f"distill.load_path not found: {d.load_path!r}")


def check_data(d, y_real, num_classes: int) -> None:
  """Data-dependent checks (ipc vs class sizes), before any compute."""
  core.check_ipc(d.ipc, factor_of(d), np.asarray(y_real), num_classes)


def build(d, model, x_real, y_real, num_classes: int, *, files_dir: str = "",
          log: Optional[logs.MetricsLog] = None) -> Tuple[methods.Method, Any, Dict, int]:
  """The method, its outer optimizer, the initial learnable pytree and iterations.

  files_dir: where a method keeps files it can reuse (MTT: its experts, trained
  here first or reloaded); '' keeps nothing.
  """
  check_data(d, y_real, num_classes)
  factor, m = factor_of(d), d[d.method]
  key = lambda *path: rng.named_key(d.seed, "distill", *path)
  table, counts = core.class_table(np.asarray(y_real), num_classes)
  aug = core.make_augment(d.augment)
  problem = methods.Problem(model, num_classes, tuple(x_real.shape[1:]), x_real,
                            jnp.asarray(y_real), table, counts, d.ipc, factor, aug, d.unroll,
                            d.execution)
  learn = {"images": core.init_images(key("init"), x_real, y_real, num_classes, d.ipc, d.init,
                                      factor)}
  method, tx, extra = registry.get(d.method).build(problem, m, key, files_dir, log)
  return method, tx, {**learn, **extra}, m.iterations


def run_outer(method: methods.Method, tx, learn, iterations: int, key, *,
              log: Optional[logs.MetricsLog] = None, log_every: int = 0,
              step=None) -> Tuple[Dict, Dict[str, float]]:
  """The outer loop: one jitted call per iteration. Returns (learn, stats).

  The learnable pytree and optimizer state are donated: each iteration
  replaces them, so their buffers are reused. `step` lets tests pass a
  trace-counted jit of method.step.
  """
  step = step or jax.jit(method.step, donate_argnums=(0, 1))
  opt_state, ctx, pending = tx.init(learn), None, []
  tick = first = None
  shown = progress.Progress("distill", iterations, "iterations")
  for it in range(iterations):
    k = jax.random.fold_in(key, it)
    ctx = method.next_context(it, ctx, jax.random.fold_in(k, 0))
    learn, opt_state, ctx, loss = step(learn, opt_state, jax.random.fold_in(k, 1), ctx)
    pending.append(loss)
    if it == 0:
      first = float(jax.block_until_ready(loss))
      tick = time.perf_counter()
    done = it + 1
    if (log_every and done % log_every == 0) or done == iterations:
      losses = np.asarray(jax.device_get(jnp.stack(pending)))
      if not np.all(np.isfinite(losses)):
        raise train.NonFiniteLossError(
            f"non-finite matching loss in stage 'distill' by iteration {done}")
      if log is not None:
        log.write("distill", done, {"matching_loss": float(losses.mean())})
      pending = []
    shown.update(done, wait=loss)
  jax.block_until_ready(learn)
  per_iter = (time.perf_counter() - tick) / max(1, iterations - 1)
  return learn, {"first_loss": first, "last_loss": float(losses[-1]),
                 "seconds_per_iteration": per_iter}




def eval_spec_for(d, meta: Dict[str, Any]):
  """The evaluation spec of a distilled set: MTT's protocol trains on the set
  with its learned inner lr (meta['lr']) when d.eval.learned_lr is set."""
  spec = d.eval.spec
  if d.eval.learned_lr and "lr" in meta:
    spec = spec.copy_and_resolve_references()
    spec.lr = float(meta["lr"])
  return spec


def evaluate_set(s, d, model, images, labels, meta: Dict[str, Any],
                 initial_images=None) -> Dict[str, Any]:
  """Distilled set vs random real subsets of the same stored size, same seeds.

  The baseline draws a fresh subset per seed, because subsets differ more than
  seeds do (MNIST-5k ipc 10, ConvNet-3: one subset scored 94.1% where 8
  subsets average 92.1 ± 0.7%), and trains them with the plain eval spec.
  initial_images (the set before distillation) measures what the
  optimisation itself added.
  """
  factor = int(meta.get("factor", 1))
  decode = lambda x: core.training_images(jnp.asarray(x), jnp.asarray(labels), factor)
  key = rng.named_key(d.seed, "distill", "eval")
  kw = dict(x_test=s.x_test, y_test=s.y_test, num_classes=s.dataset.num_classes, key=key,
            execution=d.execution)
  out = {"distilled": evaluate.train_and_test(model, eval_spec_for(d, meta), *decode(images),
                                              num_seeds=d.eval.num_seeds, **kw)}
  if initial_images is not None:  # its lr is not learned yet: the plain spec
    out["initial"] = evaluate.train_and_test(model, d.eval.spec, *decode(initial_images),
                                             num_seeds=d.eval.num_seeds, **kw)
  if d.eval.baseline:
    ipc = int(np.bincount(np.asarray(labels)).max())
    subsets = [core.random_real_subset(rng.named_key(d.seed, "distill", "baseline", k), s.y_train,
                                       s.dataset.num_classes, ipc) for k in range(d.eval.num_seeds)]
    out["random_subset"] = evaluate.train_and_test_sets(
        model, d.eval.spec, [(s.x_train[idx], s.y_train[idx]) for idx in subsets], **kw)
  return out


def run_stage(s, workdir: str, log: logs.MetricsLog) -> Dict[str, Any]:
  """Distils (or loads) a synthetic set, saves it with a PNG grid and evaluates it.

  The images it started from are saved beside it (synthetic.STARTING_FILE): the
  IMP source 'subset' trains on them. A loaded set brings its own, if any.
  """
  d = s.config.distill
  mcfg = model_config(s.config)
  model = models.create(mcfg, s.dataset.num_classes)
  out_dir = workdir_lib.distill_dir(workdir)
  os.makedirs(out_dir, exist_ok=True)
  summary: Dict[str, Any] = {}
  starting = None  # the stored images the set started from
  if d.load_path:
    images, labels, meta = synthetic.load_checked(d.load_path, s.dataset)
    if meta.get("starting"):
      starting = synthetic.load_starting(d.load_path, s.dataset)[0]
  else:
    check_data(d, s.y_train, s.dataset.num_classes)
    method, tx, learn, iterations = build(d, model, s.x_train, s.y_train, s.dataset.num_classes,
                                          files_dir=out_dir, log=log)
    starting = np.array(learn["images"], copy=True)  # run_outer donates learn
    learn, summary = run_outer(method, tx, learn, iterations,
                               rng.named_key(d.seed, "distill", "outer"),
                               log=log, log_every=d.log_every)
    images = np.asarray(learn["images"])
    labels = np.asarray(core.synthetic_labels(s.dataset.num_classes, d.ipc))
    meta = {"method": d.method, "ipc": d.ipc, "dataset": s.dataset.name,
            "mean": list(s.dataset.mean), "std": list(s.dataset.std), "factor": factor_of(d),
            "model": mcfg.name, "model_config": json.loads(mcfg.to_json_best_effort()),
            "iterations": iterations, "seed": d.seed, "init": d.init}
    if "log_lr" in learn:
      meta["lr"] = float(jnp.exp(learn["log_lr"]))
  # A loaded set is copied too: later stages read one place.
  synthetic.save_distilled(workdir_lib.distilled_set(workdir), images, labels, meta, starting)
  plots.plot_image_grid(os.path.join(out_dir, "grid"), images, labels, s.dataset.mean,
                        s.dataset.std)
  initial_images = starting if d.eval.initial else None
  result = evaluate_set(s, d, model, images, labels, meta, initial_images)
  logs.write_json(os.path.join(out_dir, "eval.json"), result)
  summary.update({k: {"mean": v["mean"], "std": v["std"], "lr": v["lr"]}
                  for k, v in result.items()})
  summary.update({"method": meta["method"], "ipc": meta["ipc"], "model": meta.get("model", ""),
                  "path": workdir_lib.distilled_set(workdir)})
  return summary


# 'model' is read when distill.model.name is ''. The outputs are moved aside
# when the inputs change (MTT experts included: they depend on the config).
# How the set is evaluated does not change synthetic.npz, which is all that
# imp and analysis read: changing distill.eval reruns this stage only.
STAGE = base.Stage("distill", run_stage, check_config, reads=("data", "model", "distill"),
                      output_dirs=lambda workdir: (workdir_lib.distill_dir(workdir),),
                      report_only=("distill.eval",))
