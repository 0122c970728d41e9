"""Curvature at a solution: Hessian and GGN diagonals, Lanczos spectra.

The loss (problem.LossProblem, every function's first argument) is the
eval-mode (running BatchNorm statistics) cross-entropy averaged over a fixed
set of examples, up to a whole split.

  problem     LossProblem, loss_batches (the examples the loss averages over)
  operators   the loss and residual-loss operators, HVPs, Rademacher probes
  probes      Hutchinson's diagonal estimate, with a stopping rule on its SE
  exact       the exact Hessian diagonal and the exact GGN diagonal
  diagonal    hessian_diagonal by a named method (METHODS), labelled
  spectrum    top eigenvalues by Lanczos (restarted at invariant subspaces),
              per-layer top eigenvalues, SLQ spectral density
  summaries   per-layer figures of a diagonal, its unpruned entries

Pruned coordinates (the problem's mask) are held at zero, so the Hessian
studied is the one of the sparse subnetwork: probes are zero there, and the
diagonal entries there are reported as excluded, not estimated.
"""
from lmcjax.curvature.diagonal import Diagonal
from lmcjax.curvature.diagonal import hessian_diagonal
from lmcjax.curvature.diagonal import METHODS
from lmcjax.curvature.diagonal import resolve_method
from lmcjax.curvature.exact import exact_diagonal
from lmcjax.curvature.exact import ggn_diagonal
from lmcjax.curvature.exact import ggn_is_hessian_diagonal
from lmcjax.curvature.operators import hvp
from lmcjax.curvature.operators import make_loss
from lmcjax.curvature.operators import make_residual_loss
from lmcjax.curvature.operators import OPERATORS
from lmcjax.curvature.operators import rademacher
from lmcjax.curvature.probes import Estimate
from lmcjax.curvature.probes import hutchinson
from lmcjax.curvature.probes import TRUSTED_RELATIVE_STDERR
from lmcjax.curvature.problem import loss_batches
from lmcjax.curvature.problem import LossProblem
from lmcjax.curvature.spectrum import lanczos
from lmcjax.curvature.spectrum import layer_top_eigenvalues
from lmcjax.curvature.spectrum import spectral_density
from lmcjax.curvature.spectrum import Spectrum
from lmcjax.curvature.summaries import kept_values
from lmcjax.curvature.summaries import layer_summaries

__all__ = (
    "Diagonal", "hessian_diagonal", "METHODS", "resolve_method", "exact_diagonal", "ggn_diagonal",
    "ggn_is_hessian_diagonal", "hvp", "make_loss", "make_residual_loss", "OPERATORS",
    "rademacher", "Estimate", "hutchinson", "TRUSTED_RELATIVE_STDERR", "loss_batches",
    "LossProblem", "lanczos", "layer_top_eigenvalues", "spectral_density", "Spectrum",
    "kept_values", "layer_summaries",
)
