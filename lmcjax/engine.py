"""The training engine: every network in lmcjax trains through it.

The dense run, IMP rounds, SGD-noise branches, the nets that evaluate a
distilled set and MTT's experts all come down to the same three pieces:
  Program     one pure step, compiled as a jitted single step driven from
              Python (`sequential`), and batched over K copies (`vmapped`):
              jit(vmap(scan)), or jit(vmap(step)) driven from Python for a
              convolutional net on XLA:CPU;
  Copy        one network to train: its start state, its data order and
              training set; `seeded_copy` derives the keys of a seed path;
  fit         the loop: it stops at log and checkpoint steps, checks the
              losses for NaN/inf there and names the first bad step.
`run` trains one copy; `run_copies` trains K copies, vmapped or one after the
other (execution.resolve picks per backend). Copy i of run_copies is
the run of `run` with the same copy: bit for bit when sequential; vmapped, up
to float rounding, since XLA:CPU may sum batched reductions in another order
(bit for bit at small sizes on some CPUs; see tests/test_engine.py).
"""
import contextlib
import dataclasses
import functools
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmcjax import checkpoints
from lmcjax import execution as execution_lib
from lmcjax import progress
from lmcjax import rng
from lmcjax import train
from lmcjax import validate

PyTree = Any
Metrics = Dict[str, jnp.ndarray]


def seed_path_keys(seeds, seed_path: Tuple[Any, ...]) -> Tuple[jax.Array, jax.Array]:
  """(augmentation key, data-order key) of the run at `seed_path`.

  config.seeds.augment and config.seeds.data_order folded with the path: two
  runs that differ only in seed_path differ only in SGD noise.
  """
  return (rng.named_key(seeds.augment, "augment", *seed_path),
          rng.named_key(seeds.data_order, "order", *seed_path))


class Program:
  """A pure `step_fn(state, batch, mask) -> (state, metrics)` compiled for the engine.

  init(init_key, aug_key, image) -> a fresh state (jitted), or None when the
  caller builds its states. The state is donated to every compiled form: its
  buffers are reused for the next state, which halves peak parameter memory;
  the batch, mask and data are read-only. unroll: see train.scan_steps.
  """

  def __init__(self, step_fn: Callable, init: Optional[Callable] = None, tx=None,
               unroll: bool = False):
    self.step_fn, self.init, self.tx, self.unroll = step_fn, init, tx, unroll
    self.step = jax.jit(step_fn, donate_argnums=0)
    self._batched: Dict[Tuple[bool, bool], Callable] = {}

  def batched(self, per_copy_data: bool, scanned: bool) -> Callable:
    """K copies in one program: (states, mask, images, labels, indices) -> (states, metrics).

    scanned: jit(vmap(scan)) over indices (K, T, B), metrics (K, T); else
    jit(vmap(step)) of one step, indices (K, B), metrics (K,).
    per_copy_data: images and labels carry a copy axis.
    """
    key = (per_copy_data, scanned)
    if key not in self._batched:
      data_axis = 0 if per_copy_data else None
      body = (functools.partial(train.scan_steps, self.step_fn, unroll=self.unroll) if scanned
              else functools.partial(train.indexed_step, self.step_fn))
      self._batched[key] = jax.jit(
          jax.vmap(body, in_axes=(0, None, data_axis, data_axis, 0)), donate_argnums=0)
    return self._batched[key]


def train_program(model, spec, num_classes: int, num_steps: int, start_step: int = 0) -> Program:
  """The Program of train.make_train_step for one (model, spec, length), built once.

  start_step: the step a rewound run starts at (train.make_schedule). The
  spec is frozen into a hashable value, the cache key with the rest.
  """
  return _train_program(model, ml_collections.FrozenConfigDict(spec), num_classes, num_steps,
                        int(start_step))


@functools.lru_cache(maxsize=32)
def _train_program(model, spec: ml_collections.FrozenConfigDict, num_classes: int,
                   num_steps: int, start_step: int) -> Program:
  tx = train.make_optimizer(spec, num_steps, start_step)

  def init(init_key, aug_key, image):
    params, stats = train.init_variables(model, init_key, image.shape)
    return train.create_state(params, stats, tx, aug_key)

  return Program(train.make_train_step(model, tx, spec.augment, num_classes), jax.jit(init), tx)


@dataclasses.dataclass
class Copy:
  """One network to train: its state, data order, training set and name (in errors)."""
  state: train.TrainState
  order: train.BatchOrder
  images: jnp.ndarray
  labels: jnp.ndarray
  name: str


def seeded_copy(program: Program, params, batch_stats, seeds, seed_path, images, labels,
                batch_size: int, start_step: int, name: str) -> Copy:
  """The copy that trains (params, batch_stats) from start_step with the keys of seed_path."""
  aug_key, order_key = seed_path_keys(seeds, seed_path)
  state = train.create_state(params, batch_stats, program.tx, aug_key, start_step)
  return Copy(state, train.BatchOrder(order_key, int(images.shape[0]), batch_size),
              images, labels, name)


def fresh_copy(program: Program, init_key, aug_key, order_key, images, labels,
               batch_size: int, name: str) -> Copy:
  """A freshly initialised copy (program.init) trained on (images, labels)."""
  state = program.init(init_key, aug_key, images[0])
  return Copy(state, train.BatchOrder(order_key, int(images.shape[0]), batch_size),
              images, labels, name)


def _check_finite(losses, start: int, names: Sequence[str], checkpointed: bool) -> np.ndarray:
  """Raises naming the copy and step of the first NaN/inf in losses ((K,) T):
  the earliest step, and of the copies bad there the first; returns the
  losses on the host as (K, T)."""
  losses = np.atleast_2d(np.asarray(jax.device_get(losses)))
  bad = np.argwhere(~np.isfinite(losses))
  if bad.size:
    copy, t = min(bad.tolist(), key=lambda copy_step: (copy_step[1], copy_step[0]))
    kept = "; the last good checkpoint is kept" if checkpointed else ""
    raise train.NonFiniteLossError(f"non-finite loss {losses[copy, t]} in stage {names[copy]!r} "
                                   f"at step {start + t}{kept}")
  return losses


def _next_stop(step: int, end: int, log_every: int, checkpointer) -> int:
  for s in range(step + 1, end):
    if (log_every and s % log_every == 0) or (checkpointer is not None and checkpointer.due(s)):
      return s
  return end


def fit(advance: Callable, state, start: int, end: int, names: Sequence[str], *,
        log_every: int = 0, on_log: Optional[Callable[[int, Dict[str, float]], None]] = None,
        checkpointer=None, examples_per_step: int = 0) -> Tuple[Any, np.ndarray]:
  """THE training loop: runs `advance` from step `start` to `end`.

  advance(state, step, count) -> (state, metrics of shape (count,), or
  (copies, count)) runs `count` steps. The loop stops at every log and
  checkpoint step (and at `end`); there it checks the losses for NaN/inf
  (checking every step would force a device sync per step), so a bad loss
  raises NonFiniteLossError naming the copy and the exact step before any
  bad state is saved; then it logs the mean metrics since the last stop with
  examples/s, and saves the state. Returns (state, the last step's losses).
  """
  last = np.full(len(names), np.nan, np.float32)
  tick, tick_step, step = time.perf_counter(), start, start
  while step < end:
    stop = _next_stop(step, end, log_every, checkpointer)
    state, metrics = advance(state, step, stop - step)
    losses = _check_finite(metrics["loss"], step, names, checkpointer is not None)
    if log_every and on_log is not None and (stop % log_every == 0 or stop == end):
      means = {k: float(v) for k, v in jax.device_get(jax.tree.map(jnp.mean, metrics)).items()}
      means["examples_per_s"] = (stop - tick_step) * examples_per_step / max(
          time.perf_counter() - tick, 1e-9)
      on_log(stop, means)
      tick, tick_step = time.perf_counter(), stop
    if checkpointer is not None and (checkpointer.due(stop) or stop == end):
      checkpointer.save(stop, state)
    last = losses[:, -1]
    step = stop
  return state, last


def _python_steps(program: Program, copy: Copy, mask, place_batch, on_step) -> Callable:
  """fit's advance for one copy: the jitted step driven from Python."""

  def advance(state, start: int, count: int):
    metrics = []
    for step in range(start, start + count):
      idx = copy.order.indices(step)
      batch = {"image": copy.images[idx], "label": copy.labels[idx]}
      state, m = program.step(state, place_batch(batch) if place_batch else batch, mask)
      metrics.append(m)
      if on_step is not None:
        on_step(step + 1, state, m)
    return state, stack_steps(metrics)

  return advance


def stack_steps(metrics: Sequence[Metrics], axis: int = 0) -> Metrics:
  """Per-step metrics stacked on a step axis (axis 1 when each has a copy axis)."""
  return jax.tree.map(lambda *ms: jnp.stack(ms, axis=axis), *metrics)


def run(program: Program, copy: Copy, mask, end: int, *, log_every: int = 0,
        on_log: Optional[Callable] = None, checkpointer=None, placer=None,
        on_step: Optional[Callable[[int, Any, Metrics], None]] = None) -> Tuple[Any, float]:
  """Trains one copy from copy.state.step to `end` with the Python-driven step.

  checkpointer (checkpoints.StateCheckpointer), if given, resumes from its
  latest saved state and saves the state as fit does. placer
  (parallel.BatchPlacer), if given, replicates the state and mask and shards
  each batch over the data-parallel mesh. on_step(done, state,
  metrics), if given, sees the state after every step before the next step
  donates it (rewind-point snapshots). Returns (state, the last step's loss).
  The copy's arrays are copied first, never donated.
  """
  state = jax.tree.map(jnp.array, copy.state)
  if checkpointer is not None:  # a rerun resumes where the killed run last saved
    state = checkpointer.restore_latest(state) or state
  if placer:
    state, mask = placer.replicate((state, mask))
  advance = _python_steps(program, copy, mask, placer, on_step)
  state, last = fit(advance, state, int(state.step), end, [copy.name], log_every=log_every,
                    on_log=on_log, checkpointer=checkpointer,
                    examples_per_step=copy.order.b)
  return state, float(last[0])


def resume(copies: Sequence[Copy], states: PyTree) -> List[Copy]:
  """The copies continued from `states` (stacked, as run_copies returns them)."""
  return [dataclasses.replace(c, state=execution_lib.take(states, i))
          for i, c in enumerate(copies)]


def _vmapped_steps(program: Program, copies: Sequence[Copy], mask,
                   scan: Optional[bool]) -> Callable:
  """fit's advance for K copies: one jit(vmap(scan)) call per stop (scan), or
  one jit(vmap(step)) call per step. scan=None: scan, except for a
  convolutional net on XLA:CPU, which runs the convolutions of a scanned step
  ~22x slower than the same step alone (bench_analysis.py). Driven from
  Python, the batched step is the single run's step vmapped: each copy is the
  single run up to float rounding (tests/test_engine.py).
  """
  per_copy = not all(c.images is copies[0].images and c.labels is copies[0].labels
                     for c in copies)
  images = execution_lib.stack([c.images for c in copies]) if per_copy else copies[0].images
  labels = execution_lib.stack([c.labels for c in copies]) if per_copy else copies[0].labels
  if scan is None:
    scan = not execution_lib.convolutional_on_cpu(copies[0].state.params)
  batched = program.batched(per_copy, scan)

  def advance(states, start: int, count: int):
    indices = jnp.asarray(np.stack([c.order.block(start, count) for c in copies]))
    if scan:
      return batched(states, mask, images, labels, indices)
    metrics = []
    for t in range(count):
      states, m = batched(states, mask, images, labels, indices[:, t])
      metrics.append(m)
    return states, stack_steps(metrics, axis=1)

  return advance


@contextlib.contextmanager
def _checkpointer(checkpoint_dir: Optional[str], every_steps: int, first: int, last: int):
  """The StateCheckpointer of copies first..last (one directory each unit of
  work, a copy or a vmapped chunk), closed on exit; None when not checkpointing."""
  if not checkpoint_dir or every_steps <= 0:
    yield None
    return
  ckpt = checkpoints.StateCheckpointer(
      os.path.join(checkpoint_dir, f"copies_{first:03d}-{last:03d}"), every_steps)
  try:
    yield ckpt
  finally:
    ckpt.close()


def _run_vmapped(program: Program, copies: Sequence[Copy], mask, end: int, checkpointer=None,
                 scan: Optional[bool] = None):
  starts = {int(c.state.step) for c in copies}
  validate.require(len(starts) == 1, f"vmapped copies must start at one step, got {sorted(starts)}")
  states = execution_lib.stack([c.state for c in copies])
  if checkpointer is not None:
    states = checkpointer.restore_latest(states) or states
  states = execution_lib.shard_copies(states)  # one or more copies per local device
  return fit(_vmapped_steps(program, copies, mask, scan), states, int(states.step[0]), end,
             [c.name for c in copies], checkpointer=checkpointer)


def run_copies(program: Program, copies: List[Copy], mask, end: int, *,
               execution: str = "auto", chunk: int = 0, placer=None,
               checkpoint_dir: Optional[str] = None, checkpoint_every_steps: int = 0,
               scan: Optional[bool] = None) -> Tuple[Any, np.ndarray]:
  """Trains every copy to `end`; returns (states stacked on a copy axis, final losses (K,)).

  execution: 'vmapped' trains `chunk` copies at a time (0: all) as one
  batched program, jit(vmap(scan)) or, with scan=False, a jit(vmap(step))
  call per step (scan=None: per backend, see _vmapped_steps; 'sequential'
  ignores it); 'sequential' runs each copy with `run` (placer: see run);
  'auto' picks per backend (execution.resolve).
  checkpoint_dir: with checkpoint_every_steps > 0, each copy (sequential) or
  chunk (vmapped) saves its state there that often and at its end, and a
  rerun with the same arguments resumes from it to the same result.
  """
  execution = execution_lib.resolve(execution, copies[0].state.params)
  shown = progress.Progress(f"{copies[0].name} and the rest", len(copies), "copies")
  if execution == "sequential":
    results = []
    for i, c in enumerate(copies):
      with _checkpointer(checkpoint_dir, checkpoint_every_steps, i, i) as ckpt:
        results.append(run(program, c, mask, end, placer=placer, checkpointer=ckpt))
      shown.update(len(results))
    return (execution_lib.stack([state for state, _ in results]),
            np.asarray([loss for _, loss in results]))
  chunk = chunk or len(copies)
  results = []
  for i in range(0, len(copies), chunk):
    part = copies[i:i + chunk]
    with _checkpointer(checkpoint_dir, checkpoint_every_steps, i, i + len(part) - 1) as ckpt:
      results.append(_run_vmapped(program, part, mask, end, ckpt, scan))
    shown.update(min(i + chunk, len(copies)))
  concat = lambda *xs: jnp.concatenate(xs)
  return (jax.tree.map(concat, *[states for states, _ in results]),
          np.concatenate([losses for _, losses in results]))
