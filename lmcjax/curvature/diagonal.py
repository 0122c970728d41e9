"""The Hessian diagonal by a named method, labelled with what it is.

Methods (METHODS):
  ggn           the exact diagonal of the generalized Gauss-Newton matrix
                (exact.ggn_diagonal). It is the exact Hessian diagonal
                wherever the logits are piecewise linear in each single
                weight (exact.ggn_is_hessian_diagonal), and refused elsewhere.
  ggn+residual  GGN diagonal plus a Hutchinson estimate of the residual
                H - GGN only (for instance/layer norm models).
  hutchinson    Hutchinson on H itself, with a stopping rule on its
                relative standard error.
  exact         one HVP per parameter (tiny nets).
  auto          ggn where it is the Hessian diagonal, else ggn+residual.
"""
import dataclasses
from typing import Any, Optional

import jax
import numpy as np

from lmcjax import validate
from lmcjax.curvature.exact import exact_diagonal, ggn_diagonal, ggn_is_hessian_diagonal
from lmcjax.curvature.probes import Estimate, hutchinson, relative_stderr
from lmcjax.curvature.problem import LossProblem

PyTree = Any
METHODS = ("auto", "ggn", "ggn+residual", "hutchinson", "exact")


def resolve_method(method: str, model) -> str:
  """The concrete diagonal method; 'ggn' on a model where it is not the Hessian
  diagonal is refused with the reason."""
  validate.choice("hessian method", method, METHODS)
  exact, reason = ggn_is_hessian_diagonal(model)
  if method == "auto":
    return "ggn" if exact else "ggn+residual"
  validate.require(method != "ggn" or exact,
                   f"hessian method 'ggn' is the Hessian diagonal only where the residual "
                   f"vanishes, not here: {reason}; use 'ggn+residual' or 'hutchinson'")
  return method


@dataclasses.dataclass
class Diagonal:
  """A Hessian (or GGN) diagonal with its method and standard error (numpy trees).

  exact=True: computed, not sampled (stderr is zero). label says what it is.
  """
  values: PyTree
  stderr: PyTree
  method: str
  label: str
  exact: bool
  num_probes: int
  relative_stderr: float
  converged: bool
  trace: float
  trace_stderr: float
  ggn: Optional[PyTree] = None  # the GGN part of 'ggn+residual'


def _from_estimate(est: Estimate, method: str, label: str,
                   offset: Optional[PyTree] = None) -> Diagonal:
  """A Hutchinson estimate (of H, or of H - GGN plus the exact GGN `offset`)."""
  values = est.diagonal if offset is None else jax.tree.map(np.add, offset, est.diagonal)
  offset_trace = 0.0 if offset is None else float(sum(np.sum(x) for x in jax.tree.leaves(offset)))
  trace = est.trace + offset_trace
  flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(values)])
  se = np.concatenate([np.ravel(x) for x in jax.tree.leaves(est.stderr)])
  return Diagonal(values, est.stderr, method, label, False, est.num_probes,
                  relative_stderr(np.linalg.norm(flat), np.linalg.norm(se), trace,
                                  est.trace_stderr),
                  est.converged, trace, est.trace_stderr, offset)


def _exact(values: PyTree, method: str, label: str) -> Diagonal:
  trace = float(sum(np.sum(x, dtype=np.float64) for x in jax.tree.leaves(values)))
  zeros = jax.tree.map(np.zeros_like, values)
  return Diagonal(values, zeros, method, label, True, 0, 0.0, True, trace, 0.0)


def hessian_diagonal(problem: LossProblem, key, *, method: str = "auto", chunk_examples: int = 50,
                     max_probes: int = 64, chunk_probes: int = 8, tol: float = 0.0,
                     max_params: int = 50000, execution: str = "auto") -> Diagonal:
  """diag(H) of the problem's loss by `method` (see METHODS), labelled with what it is.

  chunk_examples: examples per GGN call; max_probes, chunk_probes, tol:
  Hutchinson's (of H, or of the residual H - GGN); max_params: the 'exact'
  method's limit; execution: how probes and exact entries run
  (execution.resolve).
  """
  model = problem.model
  method = resolve_method(method, model)
  probes = dict(max_probes=max_probes, chunk_probes=chunk_probes, tol=tol, execution=execution)
  if method == "ggn":
    values = ggn_diagonal(problem, chunk_examples=chunk_examples)
    return _exact(values, method, "exact Hessian diagonal (= GGN diagonal: "
                  + ggn_is_hessian_diagonal(model)[1] + ")")
  if method == "exact":
    values = exact_diagonal(problem, max_params=max_params, execution=execution)
    return _exact(values, method, "exact Hessian diagonal (one HVP per parameter)")
  if method == "hutchinson":
    est = hutchinson(problem, key, **probes)
    return _from_estimate(est, method, "Hutchinson estimate of the Hessian diagonal")
  ggn = ggn_diagonal(problem, chunk_examples=chunk_examples)
  residual = hutchinson(problem, key, operator="residual", **probes)
  return _from_estimate(residual, method, "Hessian diagonal = exact GGN diagonal + Hutchinson "
                        "estimate of the residual", offset=ggn)
