"""IMP's mask sources, each declared once: what data finds its masks, in words.

A source is a recipe for finding IMP's masks. The IMP stage, the data-cost
accounting, the report and the pooled tables read these declarations; none
of them lists source names. Adding a source is one `MaskSource` here.

Small sets are the few-image training sets a source may prune on instead of
the real training set, each located from the path of the distilled set (the
distill stage writes both side by side, lmcjax/synthetic.py).
"""
import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

from lmcjax import synthetic
from lmcjax import validate


@dataclasses.dataclass(frozen=True)
class SmallSet:
  """A few-image training set a source can find its masks on.

  path(distilled_path): where it lies, given the distilled set's file;
  load(distilled_path, dataset): its stored (images, labels, meta), checked;
  check(config): one line, before any compute, when the run cannot have it.
  """
  name: str
  description: str
  path: Callable[[str], str]
  load: Callable[[str, Any], Tuple[Any, Any, Dict[str, Any]]]
  check: Callable[[Any], None] = lambda config: None


@dataclasses.dataclass(frozen=True)
class MaskSource:
  """One way of finding IMP's masks.

  description: one line for the report.
  small_set: the SmallSet (name) its first small_set_rounds(config.imp) rounds
    train on to find their masks, with imp.distilled_train; later rounds (and
    sources without one) prune the real-data run.
  random: draws its masks instead of pruning trained weights; with
    `reference` listed in imp.sources it copies that source's per-layer counts.
  always_retrains: trains every round on real data whatever
    imp.retrain_rounds says, because that run is the one it prunes.
  """
  name: str
  description: str
  small_set: str = ""
  small_set_rounds: Callable[[Any], int] = lambda c: 0
  random: bool = False
  reference: str = ""
  always_retrains: bool = False


def _check_starting(config) -> None:
  """The starting images exist only where the distill stage (or a set saved
  with them) provides them, and are real images only from distill.init='real'."""
  users = [n for n in config.imp.sources if SOURCES[n].small_set == "starting"]
  what = f"imp.sources {users} train on the real images the distilled set started from"
  if config.imp.distilled_path:
    synthetic.starting_path(config.imp.distilled_path)  # one line when it names none
    return
  validate.require("distill" in config.stages, f"{what}, which the distill stage saves: "
                   "list 'distill' in config.stages (or set imp.distilled_path to a set "
                   f"saved with them); config.stages={tuple(config.stages)}")
  d = config.distill
  if d.load_path:
    synthetic.starting_path(d.load_path)  # one line when the loaded set carries none
  else:
    validate.require(d.init == "real", f"{what}, but distill.init={d.init!r} starts the set "
                     "from noise, not from real images")


SMALL_SETS: Dict[str, SmallSet] = {s.name: s for s in (
    SmallSet("distilled", "the distilled set", lambda distilled_path: distilled_path,
             synthetic.load_checked),
    SmallSet("starting", "the real images the distilled set started from",
             synthetic.starting_path, synthetic.load_starting, _check_starting),
)}

# The order is the run order (and the column order of every table): 'random'
# reads the masks of its reference, so it runs after it.
_DECLARED = (
    MaskSource("real", "classic IMP: every round trains on the real training set",
               always_retrains=True),
    MaskSource("distilled", "every round trains on the distilled set (imp.distilled_train)",
               small_set="distilled", small_set_rounds=lambda c: c.rounds),
    MaskSource("subset", "real images the distilled set started from, trained exactly like "
               "the distilled set (same images before optimisation)",
               small_set="starting", small_set_rounds=lambda c: c.rounds),
    MaskSource("combined", "the first imp.combined_distilled_rounds rounds on the distilled "
               "set, then real data", small_set="distilled",
               small_set_rounds=lambda c: min(c.combined_distilled_rounds, c.rounds)),
    MaskSource("random", "random masks with the real masks' per-layer counts (global random "
               "pruning without a real source)", random=True, reference="real"),
)
SOURCES: Dict[str, MaskSource] = {s.name: s for s in _DECLARED}
NAMES: Tuple[str, ...] = tuple(SOURCES)


def get(name: str) -> MaskSource:
  validate.choice("mask source", name, NAMES)
  return SOURCES[name]


def ordered(names) -> Tuple[str, ...]:
  """`names` in the declared run order."""
  return tuple(n for n in NAMES if n in names)


def small_set_rounds(imp_config, name: str) -> int:
  """How many rounds (from round 0) of source `name` find their mask on its small set."""
  return get(name).small_set_rounds(imp_config) if get(name).small_set else 0


def small_sets_used(imp_config) -> Tuple[str, ...]:
  """The small sets the configured sources train on, in declaration order."""
  used = {get(n).small_set for n in imp_config.sources if small_set_rounds(imp_config, n) > 0}
  return tuple(name for name in SMALL_SETS if name in used)


def random_reference(imp_config, name: str) -> Optional[str]:
  """The source whose per-layer counts a random source copies, or None (global pruning)."""
  ref = get(name).reference
  return ref if ref and ref in imp_config.sources else None


def prunes_real_data(imp_config, name: str, k: int) -> bool:
  """Whether round k of `name` finds mask_{k+1} by pruning its real-data run."""
  source = get(name)
  return not source.random and small_set_rounds(imp_config, name) <= k < imp_config.rounds
