"""Which models the analysis stage analyses, and from which dense-run step.

The dense net (analysis.include_dense), then the masks of analysis.targets
('source:round', any source lmcjax/mask_sources.py declares, e.g.
'subset:5'), else of every IMP source at analysis.rounds, else the last round
of every source found under DIR/imp.
"""
import os
import re
from typing import Any, Dict, List, Optional, Set, Tuple

from lmcjax import checkpoints
from lmcjax import dense
from lmcjax import imp
from lmcjax import mask_sources
from lmcjax import masks
from lmcjax import modelid
from lmcjax import validate
from lmcjax import workdir as layout

PyTree = Any
TARGET = re.compile(r"^([a-z_]+):(\d+)$")
_ROUND_DIR = re.compile(r"^round_(\d+)$")


def check_round(config, r, what: str) -> None:
  """Rounds 1..imp.rounds have masks (round 0 is the dense net)."""
  validate.require(isinstance(r, int) and 1 <= r <= config.imp.rounds,
                   f"{what}: IMP produces masks at rounds 1..{config.imp.rounds} "
                   f"(imp.rounds={config.imp.rounds}), not round {r!r}")


def check(config) -> None:
  """analysis.targets and analysis.rounds name masks IMP produces."""
  a = config.analysis
  for t in a.targets:
    validate.require(bool(TARGET.match(str(t))),
                     f"analysis.targets entry {t!r} is not 'source:round', e.g. 'real:4'")
    validate.choice(f"analysis.targets entry {t!r}: source", TARGET.match(str(t)).group(1),
                    mask_sources.NAMES)
    check_round(config, int(TARGET.match(str(t)).group(2)), f"analysis.targets entry {t!r}")
  for r in a.rounds:
    check_round(config, r, f"analysis.rounds entry {r!r}")


def _target_ids(a) -> List[modelid.ModelId]:
  """The models analysis.targets names ('source:round'; check() refuses others)."""
  matches = (TARGET.match(str(t)) for t in a.targets)
  return [modelid.ModelId(m.group(1), int(m.group(2))) for m in matches if m]


def analysed_rounds(config) -> Dict[str, Set[int]]:
  """Source -> the IMP rounds whose masks the analysis stage analyses, by this
  module's rule: analysis.targets, else every IMP source at analysis.rounds,
  else each source's last round."""
  a = config.analysis
  if a.targets:
    out: Dict[str, Set[int]] = {}
    for model in _target_ids(a):
      out.setdefault(model.source, set()).add(model.round)
    return out
  return {src: set(a.rounds) or {config.imp.rounds} for src in config.imp.sources}


def planned_rounds(config) -> Dict[str, Set[int]]:
  """analysed_rounds where the stage analyses masks at all (IMP rounds or
  explicit targets), else none."""
  return analysed_rounds(config) if config.imp.rounds or config.analysis.targets else {}


def planned_counts(config) -> Tuple[int, int]:
  """(models the stage analyses, how many of them in detail), from the config
  alone (bench/estimate_cost.py): the dense net where included, every analysed
  mask; detail: the dense net and each source's sparsest mask, or every model
  (analysis.detail_models 'all'). Without targets or analysis.rounds the stage
  analyses the last round found under DIR/imp: here, imp.rounds of every
  imp.sources."""
  a = config.analysis
  rounds = planned_rounds(config)
  masked = sum(len(r) for r in rounds.values())
  detailed = masked if a.detail_models == "all" else len(rounds)
  return int(a.include_dense) + masked, int(a.include_dense) + detailed


def imp_rounds(config) -> Tuple[int, ...]:
  """The IMP rounds whose masks the stage reads: analysis.rounds and the rounds
  its explicit targets name, else IMP's last round, the one it then finds
  (imp.retrain_rounds='analysed' retrains them)."""
  a = config.analysis
  rounds = set(a.rounds) | {model.round for model in _target_ids(a)}
  return tuple(sorted(rounds or {config.imp.rounds}))


def rewind_steps(config, num_train: int) -> Tuple[int, ...]:
  """The dense-run steps the stage's copies start from, beyond IMP's rewind
  point: analysis.start_epoch and the instability curve's epochs."""
  a = config.analysis
  steps = [dense.epoch_step(config, num_train, a.start_epoch)] if a.start == "epoch" else []
  if a.instability.enabled:
    steps += [dense.epoch_step(config, num_train, e) for e in a.instability.rewind_epochs]
  return tuple(steps)


def start_step(config, num_train: int) -> int:
  """The dense-run step the branches start from (0 = init)."""
  a = config.analysis
  if a.start == "rewind":
    return imp.rewind_step(config, num_train)
  return dense.epoch_step(config, num_train, a.start_epoch) if a.start == "epoch" else 0


def start_point(s, wd: str, log) -> Tuple[PyTree, int]:
  """(the {'params', 'batch_stats'} the copies start from, its dense-run step).

  IMP's rewind point is step j of the dense run (lmcjax.dense), so no IMP
  stage is needed to start from it.
  """
  step = start_step(s.config, int(s.x_train.shape[0]))
  return dense.load(s, wd, step, log), step


def _mask_rounds(wd: str, source: str) -> List[int]:
  folder = os.path.join(layout.imp_dir(wd), source)
  names = os.listdir(folder) if os.path.isdir(folder) else []
  found = [int(m.group(1)) for m in map(_ROUND_DIR.match, names) if m]
  return [r for r in found if checkpoints.exists(layout.mask(wd, source, r))]


def _discovered(wd: str) -> List[modelid.ModelId]:
  """The last round of every source with a pruned mask under DIR/imp."""
  root = layout.imp_dir(wd)
  sources = sorted(os.listdir(root)) if os.path.isdir(root) else []
  return [modelid.ModelId(src, max(rounds)) for src in sources
          for rounds in [_mask_rounds(wd, src)] if rounds and max(rounds) > 0]


def _targets(s, a, wd: str) -> List[modelid.ModelId]:
  """Every analysed mask: explicit targets, else every IMP source at
  analysis.rounds, else the last round of every source found."""
  if a.targets:
    return _target_ids(a)
  if a.rounds:
    sources = mask_sources.ordered(s.config.imp.sources)
    return [modelid.ModelId(src, r) for src in sources for r in sorted(a.rounds)]
  return _discovered(wd)


def models(s, a, wd: str) -> List[Tuple[modelid.ModelId, Optional[PyTree]]]:
  """(model, mask) of every analysed model; the dense one has no mask."""
  out = [(modelid.DENSE, None)] if a.include_dense else []
  for model in _targets(s, a, wd):
    path = layout.mask(wd, model.source, model.round)
    validate.require(checkpoints.exists(path), f"analysis target "
                     f"'{model.source}:{model.round}': no mask at {path}")
    mask = checkpoints.load_tree(path, like=masks.ones_like(s.init_params), what="mask")
    out.append((model, mask))
  validate.require(bool(out), "analysis has nothing to analyse: include_dense is False and "
                   "no targets were given or found under DIR/imp")
  return out
