"""bench_peer.py's PyTorch process: torch as a PyTorch user runs it.

It never imports lmcjax or JAX, so it runs with glibc's and torch's own
defaults, unless bench_peer starts it with lmcjax's malloc settings in its
environment (the second PyTorch column).

Protocol, one JSON object a line: bench_peer writes commands to stdin, this
process answers each on stdout.
  {"op": "info"}                                 -> {"torch": ..., "threads": ..., "pyhessian": ...}
  {"op": "build", "row": ID, "spec": {...}}      -> {"loss": eval loss of the row's net} (a check)
  {"op": "time", "row": ID}                      -> {"wall": s, "cpu": s}
Arrays travel in the .npz file named by spec["arrays"] (no pickles), as
"<tree>|<flax path>" for parameter trees and by name otherwise.
"""
import argparse
import json
import sys
import time

import numpy as np
import torch

import peer_torch


def unflatten(flat: dict) -> dict:
  """{'Conv_0.kernel': array} -> {'Conv_0': {'kernel': array}}."""
  tree = {}
  for path, value in flat.items():
    *parents, leaf = path.split(".")
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


class Arrays:
  """The arrays of one row: trees by name, and plain arrays."""

  def __init__(self, path: str):
    with np.load(path, allow_pickle=False) as f:
      self._all = {k: f[k] for k in f.files}

  def __getitem__(self, name: str) -> np.ndarray:
    return self._all[name]

  def tree(self, name: str) -> dict:
    prefix = name + "|"
    return unflatten({k[len(prefix):]: v for k, v in self._all.items() if k.startswith(prefix)})


class Worker:
  """Builds each row's torch workload once, then times it on request."""

  def __init__(self, device: str):
    self.device = device
    self.rows = {}

  def make_model(self, spec, params):
    net = spec["net"]
    shape = tuple(net["image_shape"])
    if net["arch"] == "convnet":
      module = peer_torch.convnet(shape, net["width"], net["depth"], net["num_classes"])
    else:
      module = peer_torch.lenet(shape, net["num_classes"])
    module = module.to(self.device)
    peer_torch.load(module, self.tensors(spec, params))
    return module

  def tensors(self, spec, tree):
    return peer_torch.tensors(
        peer_torch.torch_layout(tree, tuple(spec["net"]["feature_shape"])), self.device)

  def batch(self, arrays: Arrays):
    images = np.ascontiguousarray(arrays["images"].transpose(0, 3, 1, 2))
    return (torch.as_tensor(images, device=self.device),
            torch.as_tensor(arrays["labels"].astype(np.int64), device=self.device))

  def build(self, row: str, spec: dict) -> dict:
    arrays = Arrays(spec["arrays"])
    model = self.make_model(spec, arrays.tree("params"))
    x, y = self.batch(arrays)
    loss, _ = peer_torch.evaluate(model, x, y)  # before the workload changes any weight
    kind, opts = spec["kind"], spec.get("options", {})
    if kind == "train":
      opt = torch.optim.SGD(model.parameters(), lr=opts["lr"], momentum=opts["momentum"],
                            weight_decay=opts["weight_decay"])
      mask = self.tensors(spec, arrays.tree("mask")) if opts["masked"] else None
      fn = lambda: peer_torch.train_steps(model, opt, x, y, mask, opts["steps"])
    elif kind == "hutchinson":
      fn = lambda: peer_torch.hutchinson_probe(model, x, y, self.device)
    elif kind == "exact":
      fn = lambda: peer_torch.exact_diagonal_entries(model, x, y, arrays["indices"])
    elif kind == "interpolation":
      a, b = self.tensors(spec, arrays.tree("params")), self.tensors(spec, arrays.tree("end_b"))
      alphas = [float(t) for t in arrays["alphas"]]
      fn = lambda: peer_torch.interpolation(model, a, b, alphas, x, y)
    elif kind == "landscape":
      origin = self.tensors(spec, arrays.tree("params"))
      directions = [self.tensors(spec, arrays.tree(f"direction{k}")) for k in range(2)]
      coords = [tuple(map(float, c)) for c in arrays["coords"]]
      fn = lambda: peer_torch.landscape(model, origin, directions, coords, x, y)
    else:
      raise ValueError(f"unknown row kind {kind!r}")
    self.rows[row] = fn
    return {"loss": loss}

  def time(self, row: str) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    self.rows[row]()
    peer_torch.sync(self.device)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--device", default="cpu")
  parser.add_argument("--threads", type=int, default=0)
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  worker = Worker(args.device)
  for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "info":
      answer = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "pyhessian": peer_torch.pyhessian_hessian is not None}
    elif command["op"] == "build":
      answer = worker.build(command["row"], command["spec"])
    else:
      answer = worker.time(command["row"])
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
  main()
