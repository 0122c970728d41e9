"""Where each stage keeps its files inside an experiment's workdir.

One place for the layout, so stages that read another stage's output
(analysis reads IMP's masks and rewind point, IMP reads the distilled set)
agree on it.
"""
import os


def distill_dir(workdir: str) -> str:
  return os.path.join(workdir, "distill")


def distilled_set(workdir: str) -> str:
  """The distill stage's output; the IMP 'distilled' source reads it by default."""
  return os.path.join(distill_dir(workdir), "synthetic.npz")


def imp_dir(workdir: str) -> str:
  return os.path.join(workdir, "imp")


def rewind_point(workdir: str) -> str:
  """Orbax tree {'params', 'batch_stats'} that every IMP round rewinds to."""
  return os.path.join(imp_dir(workdir), "rewind")


def round_dir(workdir: str, source: str, round_index: int) -> str:
  return os.path.join(imp_dir(workdir), source, f"round_{round_index:02d}")


def mask(workdir: str, source: str, round_index: int) -> str:
  """Orbax tree: the mask used in round k (sparsity 1 - 0.8^k; round 0 is dense)."""
  return os.path.join(round_dir(workdir, source, round_index), "mask")


def final_params(workdir: str, source: str, round_index: int) -> str:
  """Orbax tree {'params', 'batch_stats'} at the end of round k's training."""
  return os.path.join(round_dir(workdir, source, round_index), "final")


def train_checkpoints(workdir: str, source: str, round_index: int) -> str:
  """StateCheckpointer directory for round k's mid-training state."""
  return os.path.join(round_dir(workdir, source, round_index), "ckpt")


def analysis_dir(workdir: str) -> str:
  return os.path.join(workdir, "analysis")


def analysis_model_dir(workdir: str, model: str) -> str:
  """One analysed model's files ('dense' or 'SOURCE_rKK')."""
  return os.path.join(analysis_dir(workdir), model)


def instability_point_dir(workdir: str, model: str, step: int) -> str:
  """The copies of one instability point: `model` from step `step` of the dense run."""
  return os.path.join(analysis_dir(workdir), "instability", model, f"step_{step:07d}")


def branch_checkpoints(parent: str) -> str:
  """The copies' mid-training StateCheckpointer directories under `parent`,
  removed once their final trees are saved."""
  return os.path.join(parent, "copies", "ckpt")


def branch_copies_record(parent: str) -> str:
  """JSON of the saved copies' count, final training losses and cost, written
  after their trees: its presence means every copy under `parent` is saved."""
  return os.path.join(parent, "copies", "copies.json")


def branch_copy(parent: str, copy: int) -> str:
  """Orbax tree {'params', 'batch_stats'}: SGD-noise copy `copy` at the end of its training,
  under an analysed model's or an instability point's directory."""
  return os.path.join(parent, "copies", f"copy_{copy:02d}")
