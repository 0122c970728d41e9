"""Git Re-Basin on MNIST-5k: dense MLPs from different inits, before and after alignment.

The benchmark target of permutation alignment (Ainsworth et al. 2023 report
near-zero barriers for wide MLPs on MNIST): nets from 3 init seeds, every
pair interpolated naive, after weight matching and after activation matching,
each with and without REPAIR. Dense nets only (no IMP), offline, minutes on
2 CPU cores:

  python launch/main.py --config configs/rebasin_mnist.py --workdir runs/rebasin/lenet300
  python launch/main.py --config configs/rebasin_mnist.py:512,512,512 --workdir runs/rebasin/w512

The argument is the MLP's hidden widths ('300,100', LeNet-300-100, by default).
"""
from lmcjax.configs import default
from lmcjax.configs.parts import model as model_part


def get_config(hidden: str = "300,100"):
  config = default.get_config("mlp")
  config.stages = ("train", "analysis", "report")
  config.model = model_part.get("mlp", hidden=tuple(int(w) for w in hidden.split(",")))
  a = config.analysis
  # The SGD-noise copies of the dense net stay (2, the fewest), as the
  # reference a cross-seed barrier is read against.
  a.num_branches, a.eval_splits = 2, ("test",)
  a.landscape.kinds = ()
  a.hessian.enabled = False
  a.instability.enabled = False
  a.cross_seed.update(enabled=True, num_inits=3, num_alphas=31)
  return config
