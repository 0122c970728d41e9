"""Hutchinson's estimate of a Hessian diagonal from Rademacher probes.

diag(H) ~ mean over z of z * Hz, with a stopping rule on its relative
standard error. H is the Hessian of the loss or of its residual H - GGN
(operators.OPERATORS).
"""
import dataclasses
import functools
from typing import Any

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from lmcjax import execution as execution_lib
from lmcjax import progress
from lmcjax import validate
from lmcjax.curvature.operators import OPERATORS, hvp, rademacher
from lmcjax.curvature.problem import LossProblem

PyTree = Any
# An estimate whose relative standard error exceeds this is noise at the scale
# of the diagonal: the report flags it and never compares it between models.
TRUSTED_RELATIVE_STDERR = 0.3


@functools.lru_cache(maxsize=16)
def _probe_programs(model, batch_size_examples: int, operator: str, execution: str):
  """Jitted (one, batch) on (params, stats, images, labels, mask, key or keys).

  one: a probe's sample, z * Hz as a flat vector with the trace z.Hz
  appended. batch: the mean and the sum of squared deviations (M2) of the
  samples of a vector of keys, vmapped. H is the Hessian of OPERATORS[operator].
  """

  def one_probe(params, batch_stats, images, labels, mask, key):
    problem = LossProblem(model, params, batch_stats, images, labels, batch_size_examples)
    loss = OPERATORS[operator](problem, execution)
    z = rademacher(key, params, mask)
    zhz = jax.tree.map(jnp.multiply, z, hvp(loss, params, z))
    return jnp.append(ravel_pytree(zhz)[0], sum(jnp.sum(x) for x in jax.tree.leaves(zhz)))

  def block_moments(*args):
    samples = jax.vmap(one_probe, in_axes=(None,) * 5 + (0,))(*args)
    mean = jnp.mean(samples, axis=0)
    return mean, jnp.sum(jnp.square(samples - mean), axis=0)

  return jax.jit(one_probe), jax.jit(block_moments)


@jax.jit
def _merge(moments, size, block_mean, block_m2):
  """(count, mean, M2) of the samples so far, updated with a block's.

  Chan et al.'s pairwise update: stable in float32, so the running moments
  stay on the device and no probe is read back until the end.
  """
  count, mean, m2 = moments
  total = count + size
  delta = block_mean - mean
  spread = jnp.square(delta) * (count * size / total)
  return total, mean + delta * (size / total), m2 + block_m2 + spread


@jax.jit
def _mean_se(moments):
  """The samples' mean and its standard error (inf below two samples)."""
  count, mean, m2 = moments
  variance = jnp.maximum(m2, 0.0) / jnp.maximum(count - 1, 1)
  return mean, jnp.where(count > 1, jnp.sqrt(variance / count), jnp.inf)


@jax.jit
def _norms(moments):
  """||mean||, ||SE|| of the diagonal and the trace's mean and SE: all the
  stopping rule needs, four scalars instead of the whole diagonal."""
  mean, se = _mean_se(moments)
  return jnp.linalg.norm(mean[:-1]), jnp.linalg.norm(se[:-1]), mean[-1], se[-1]


@dataclasses.dataclass
class Estimate:
  """A Hutchinson estimate: diagonal and its standard error (numpy trees)."""
  diagonal: PyTree
  stderr: PyTree
  num_probes: int
  trace: float
  trace_stderr: float
  relative_stderr: float  # max of the diagonal's and the trace's
  converged: bool


def relative_stderr(mean_norm: float, se_norm: float, trace: float, trace_se: float) -> float:
  """Relative standard error: ||SE||/||diag|| and SE(trace)/|trace|, the larger.

  abs() because a trace (or diagonal sum) may be negative away from a minimum.
  """
  tiny = np.finfo(np.float64).tiny
  return max(float(se_norm) / max(float(mean_norm), tiny),
             float(trace_se) / max(abs(float(trace)), tiny))


def hutchinson(problem: LossProblem, key, *, max_probes: int = 64, chunk_probes: int = 8,
               tol: float = 0.0, operator: str = "hessian", execution: str = "auto") -> Estimate:
  """diag(H) ~ mean over Rademacher z of z * Hz, checked every `chunk_probes` probes.

  Stops once the relative standard error (see relative_stderr) is <= tol,
  after at least two chunks; tol=0 runs all max_probes. Probe k uses
  fold_in(key, k), so the estimate does not depend on the chunk size or the
  execution. execution (execution.resolve): 'vmapped' runs each full
  chunk of probes as one vmapped program, 'sequential' one jitted probe at a
  time; a last, shorter chunk runs probe by probe either way (no padded
  probes, and no compile per remainder size). With several local devices a
  vmapped chunk's probes are split over them (execution.shard_copies). The running mean and variance
  stay on the device. operator='residual' estimates the diagonal of H - GGN
  instead (operators.make_residual_loss). Probes are zero at problem.mask's
  pruned entries, and so is the estimate.
  """
  validate.choice("hutchinson operator", operator, OPERATORS)
  validate.positive("hutchinson max_probes", max_probes)
  validate.positive("hutchinson chunk_probes", chunk_probes)
  validate.non_negative("hutchinson tol", tol)
  execution = execution_lib.resolve(execution, problem.params)
  one, batch = _probe_programs(problem.model, problem.batch_size_examples, operator, execution)
  args = problem.operands() + (problem.mask,)
  flat_params, unravel = ravel_pytree(problem.params)
  zeros = jnp.zeros(flat_params.size + 1, flat_params.dtype)
  moments = (jnp.zeros((), jnp.int32), zeros, zeros)
  n, converged, relative = 0, False, np.inf
  shown = progress.Progress(f"Hutchinson {operator} diagonal", max_probes, "probes")
  while n < max_probes and not converged:
    count = min(chunk_probes, max_probes - n)
    keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(n, n + count))
    if execution == "vmapped" and count == chunk_probes:
      # Several local devices each take whole probes of the chunk (the
      # moments' means over the chunk become one cross-device reduction).
      moments = _merge(moments, count, *batch(*args, execution_lib.shard_copies(keys)))
    else:
      for k in keys:
        sample = one(*args, k)
        moments = _merge(moments, 1, sample, jnp.zeros_like(sample))
    n += count
    if n >= 2 and (tol > 0 or n >= max_probes):
      relative = relative_stderr(*_norms(moments))
      converged = bool(tol > 0 and n >= 2 * min(chunk_probes, max_probes) and relative <= tol)
    shown.update(max_probes if converged else n, f"relative SE {relative:.3g}"
                 + (f", converged after {n} probes" if converged else ""))
  mean, se = jax.device_get(_mean_se(moments))
  to_tree = lambda v: jax.tree.map(np.asarray, unravel(jnp.asarray(v[:-1], flat_params.dtype)))
  return Estimate(to_tree(mean), to_tree(se), n, float(mean[-1]), float(se[-1]),
                  float(relative), converged)
