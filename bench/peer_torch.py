"""The PyTorch side of bench/bench_peer.py, from public APIs only.

lmcjax's ConvNet-D and LeNet-300-100 written in torch.nn, lmcjax's weights
copied in (so both frameworks evaluate the same function), and each workload
as a PyTorch user would write it: an SGD step, a per-point evaluation loop,
PyHessian's Hutchinson trace, and one double-backward HVP per parameter (the
seed paper's exact diagonal).
"""
from typing import List, Sequence
import warnings

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

try:
  from pyhessian import hessian as pyhessian_hessian  # pylint: disable=g-import-not-at-top
except ImportError:  # the [peer] extra installs it; the own HVP below stands in
  pyhessian_hessian = None

# PyHessian calls backward(create_graph=True), which warns of a reference cycle
# on every call; it frees the graph itself (model.zero_grad in trace).
warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")


def convnet(image_shape, width: int, depth: int, num_classes: int) -> nn.Sequential:
  """lmcjax ConvNet-D with instance norm and avg pooling: depth x [conv3x3,
  GroupNorm(groups=channels), relu, avg pool 2], then one linear layer."""
  height, _, channels = image_shape
  layers = []
  for i in range(depth):
    layers += [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1),
               nn.GroupNorm(width, width, eps=1e-5), nn.ReLU(), nn.AvgPool2d(2)]
    height //= 2
  return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * height * height, num_classes))


def lenet(image_shape, num_classes: int, hidden: Sequence[int] = (300, 100)) -> nn.Sequential:
  layers, width = [nn.Flatten()], int(np.prod(image_shape))
  for h in hidden:
    layers += [nn.Linear(width, h), nn.ReLU()]
    width = h
  return nn.Sequential(*layers, nn.Linear(width, num_classes))


def _chw_rows(kernel: np.ndarray, feature_shape) -> np.ndarray:
  """A flax Dense kernel (h*w*c, out) reading an NHWC flatten, as the torch
  weight (out, c*h*w) reading an NCHW flatten."""
  h, w, c = feature_shape
  return kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1).T


def torch_layout(params, feature_shape) -> List[np.ndarray]:
  """lmcjax params (a ConvNet or an MLP tree) as arrays in torch's parameter
  order and layouts. Linear in params, so it maps directions and masks too.
  feature_shape: (h, w, c) of the input to the first Dense layer."""
  out = []
  convs = sorted((k for k in params if k.startswith("Conv_")), key=lambda k: int(k[5:]))
  for i, name in enumerate(convs):
    out += [np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1),
            np.asarray(params[name]["bias"])]
    norm = params[f"GroupNorm_{i}"]
    out += [np.asarray(norm["scale"]), np.asarray(norm["bias"])]
  dense = sorted((k for k in params if k.startswith("Dense_")), key=lambda k: int(k[6:]))
  for i, name in enumerate(dense):
    kernel = np.asarray(params[name]["kernel"])
    out += [_chw_rows(kernel, feature_shape) if i == 0 else kernel.T,
            np.asarray(params[name]["bias"])]
  return out


def tensors(arrays: Sequence[np.ndarray], device) -> List[torch.Tensor]:
  return [torch.as_tensor(np.array(a), device=device) for a in arrays]  # a writable copy


def load(model: nn.Module, values: Sequence[torch.Tensor]) -> None:
  with torch.no_grad():
    for p, v in zip(model.parameters(), values):
      p.copy_(v)


def sync(device) -> None:
  if torch.device(device).type == "cuda":
    torch.cuda.synchronize()


def train_steps(model, opt, images, labels, mask, steps: int) -> float:
  """`steps` SGD steps on one batch; pruned weights held at zero as in lmcjax
  (gradients masked before the step, weights re-masked after it)."""
  for _ in range(steps):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    if mask is not None:
      for p, m in zip(model.parameters(), mask):
        p.grad.mul_(m)
    opt.step()
    if mask is not None:
      with torch.no_grad():
        for p, m in zip(model.parameters(), mask):
          p.mul_(m)
  return loss.item()


def evaluate(model, images, labels):
  with torch.no_grad():
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(-1) == labels).float().mean()
  return loss.item(), accuracy.item()


def interpolation(model, end_a, end_b, alphas, images, labels):
  """Loss and accuracy at each alpha of (1 - alpha) a + alpha b: a loop."""
  out = []
  for alpha in alphas:
    load(model, [(1 - alpha) * a + alpha * b for a, b in zip(end_a, end_b)])
    out.append(evaluate(model, images, labels))
  return out


def landscape(model, origin, directions, coords, images, labels):
  """Loss and accuracy at origin + sum_k c_k d_k for each point c: a loop."""
  out = []
  for point in coords:
    load(model, [o + sum(float(c) * d[i] for c, d in zip(point, directions))
                 for i, o in enumerate(origin)])
    out.append(evaluate(model, images, labels))
  return out


def _grads_with_graph(model, images, labels):
  params = [p for p in model.parameters() if p.requires_grad]
  loss = F.cross_entropy(model(images), labels)
  return params, torch.autograd.grad(loss, params, create_graph=True)


def hutchinson_probe(model, images, labels, device) -> float:
  """One Rademacher probe z.Hz of the eval-mode loss: PyHessian's trace with
  maxIter=1 (its constructor runs the forward and backward with the graph
  kept), or the same computation written out if PyHessian is absent."""
  model.eval()
  if pyhessian_hessian is not None:
    cuda = torch.device(device).type == "cuda"
    return pyhessian_hessian(model, nn.CrossEntropyLoss(), data=(images, labels),
                             cuda=cuda).trace(maxIter=1)[0]
  params, grads = _grads_with_graph(model, images, labels)
  probes = [torch.randint_like(p, 2) * 2 - 1 for p in params]
  hz = torch.autograd.grad(grads, params, grad_outputs=probes)
  return sum(torch.sum(z * h) for z, h in zip(probes, hz)).item()


def exact_diagonal_entries(model, images, labels, flat_indices) -> List[float]:
  """H_ii for each flat parameter index i, one HVP with e_i each (the seed
  paper's method), the gradient graph built once and kept."""
  model.eval()
  params, grads = _grads_with_graph(model, images, labels)
  sizes = np.cumsum([0] + [p.numel() for p in params])
  out = []
  for i in flat_indices:
    leaf = int(np.searchsorted(sizes, i, side="right")) - 1
    basis = [torch.zeros_like(p) for p in params]
    basis[leaf].view(-1)[i - sizes[leaf]] = 1.0
    hv = torch.autograd.grad(grads, params, grad_outputs=basis, retain_graph=True)
    out.append(hv[leaf].reshape(-1)[i - sizes[leaf]].item())
  return out
