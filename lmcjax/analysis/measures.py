"""What the analysis measures, each registered once with what it is.

A measure is one module that builds a `Measure` and one line that registers it
(the built-in ones: lmcjax/analysis/__init__.py). The stage runs every
registered measure whose config section is in config.analysis, in
registration order, and never branches on a measure's name: which config
section it reads, what it adds to each model's summary.json, its figures, on
which models it runs, all are declared here.

A measure runs per analysed model (`run` and `record`: barriers, landscapes,
the Hessian), across models (`run_across`: the instability curve), or both;
`figures` draws cross-model figures from the per-model outputs. A section
with an `enabled` field switches its measure on and off.
"""
import copy
import dataclasses
import functools
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Tuple

import ml_collections

from lmcjax import branches
from lmcjax import logs
from lmcjax import modelid
from lmcjax import runtime
from lmcjax import validate

PyTree = Any
Section = ml_collections.ConfigDict
# The splits a measure may evaluate on (ModelContext.splits holds those declared).
SPLITS = ("train", "test", "distilled")
# Keys the stage writes itself: no measure may record under them.
MODEL_KEYS = ("sparsity", "start", "branch_final_train_loss", "branch_cost", "branch_test_error",
              "timings")
STAGE_KEYS = ("models", "figures", "num_alphas", "num_test", "seed", "start", "timings")


@dataclasses.dataclass
class ModelContext:
  """What a per-model measure is handed: one analysed model and its copies.

  Attributes:
    setup: runtime.Setup (model, data, config).
    analysis: config.analysis (shared fields: num_branches, execution, ...).
    model: the analysed model.
    stacked: the copies' {'params', 'batch_stats'}, copy index on axis 0.
    mask: its 0/1 mask, None for the dense net.
    splits: split name -> (images, labels): each split a measure declared.
    out_dir: DIR/analysis/MODEL, where it writes its files.
  """
  setup: runtime.Setup
  analysis: Section
  model: modelid.ModelId
  stacked: PyTree
  mask: Optional[PyTree]
  splits: Dict[str, Tuple[Any, Any]]
  out_dir: str

  @functools.cached_property
  def test_errors(self) -> List[float]:
    """Each copy's test error, evaluated when first read (the stage reads it
    once every measure ran, before the records)."""
    return branches.copy_test_errors(self.setup, self.stacked, self.analysis.num_branches)


@dataclasses.dataclass
class Analysed:
  """One analysed model after the per-model measures: its summary.json, each
  measure's in-memory output (None where it did not run) and the scalars logged."""
  model: modelid.ModelId
  mask: Optional[PyTree]
  summary: Dict[str, Any]
  outputs: Dict[str, Any]
  scalars: Dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StageContext:
  """What `figures` and `run_across` are handed: every analysed model.

  Attributes:
    setup, analysis, splits: as in ModelContext.
    workdir: DIR; out_dir: DIR/analysis; log: the run's metrics log.
    start_step: the dense-run step the analysed models' copies start from.
    analysed: the analysed models, in the order they were analysed.
  """
  setup: runtime.Setup
  analysis: Section
  workdir: str
  out_dir: str
  log: logs.MetricsLog
  splits: Dict[str, Tuple[Any, Any]]
  start_step: int
  analysed: List[Analysed]


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What a cost is counted from besides the config (bench/estimate_cost.py).

  Attributes:
    examples: split name (SPLITS) -> examples in it.
    module: the config's model (flax module).
    variables: its {'params', 'batch_stats'}, abstract (shapes) or not.
    image_shape: one example's (H, W, C).
    num_classes: classes of the dataset.
  """
  examples: Dict[str, int]
  module: Any
  variables: Any
  image_shape: Tuple[int, ...]
  num_classes: int


@dataclasses.dataclass(frozen=True)
class Cost:
  """What a measure computes, counted from the config alone: job key ->
  examples. A key names one job; measures that share a job (the inits' nets
  and the matchings that move masks, which lmcjax.analysis.inits caches) give
  it the same key ('inits', ...), so it counts once; a measure's own keys
  start with its name.

  Attributes:
    train_examples: examples through a train step (a Hessian-vector product
      counts as 2).
    forward_examples: examples through an evaluation forward pass.
  """
  train_examples: Mapping[Hashable, int] = dataclasses.field(default_factory=dict)
  forward_examples: Mapping[Hashable, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Measure:
  """What one measure is. `c` below is the measure's config section.

  Attributes:
    name: its registry name; a per-model measure's time is 'NAME_s' in each
      model's timings, an across-model one's record is summary.json[NAME].
    section: the field of config.analysis holding its section; '' for fields
      directly in config.analysis (the interpolation, older than measures).
    check: config -> None; a bad value is one validate.InputError line,
      raised before any compute.
    records: the keys `record` adds to each analysed model's summary.json.
    run: (ModelContext, c) -> output: measures one model, writes its files
      under ctx.out_dir; the output stays in memory for record and figures.
    record: (ModelContext, c, output or None where it did not run) ->
      {key: value} for exactly `records`; called once every measure ran.
    figures: (StageContext, c) -> {figure name: path} in summary['figures'],
      drawn from the per-model outputs and records.
    run_across: (StageContext, c) -> its record across models, run after the
      figures.
    detail_only: runs only on the models analysis.detail_models picks.
    splits: c -> the splits it evaluates on: loaded (and checked non-empty)
      before any compute.
    scalars: (ModelContext, record) -> {name: number} logged per model
      (metrics.jsonl and TensorBoard).
    defaults: its section's fields and their defaults; config.analysis[section]
      must hold exactly these. None for the built-in measures, whose sections
      configs/parts/analysis.py holds and documents.
    report: (workdir, summary.json['analysis']) -> Report: its flat
      results.json tables and its report.md section, from what it recorded
      (lmcjax/report.py adds them after the built-in sections, in
      registration order, and never names the measure).
    pool: (sweep root, {seed: that seed's results.json}) -> Report: its
      tables and pooled.md section over the init seeds of a sweep (lmcjax/
      pooled.py adds them, in registration order), from the rows `report`
      wrote to each seed's results.json; figures go under the root.
    cost: (config, c, Sizes) -> Cost: what it computes when enabled, from the
      config alone; per model for a per-model measure (planned_costs counts it
      on each model it runs on), for the whole run otherwise. None: priced
      at nothing by bench/estimate_cost.py.
  """
  name: str
  section: str
  check: Callable[[Any], None]
  records: Tuple[str, ...] = ()
  run: Optional[Callable[[ModelContext, Section], Any]] = None
  record: Optional[Callable[[ModelContext, Section, Any], Dict[str, Any]]] = None
  figures: Optional[Callable[[StageContext, Section], Dict[str, str]]] = None
  run_across: Optional[Callable[[StageContext, Section], Dict[str, Any]]] = None
  detail_only: bool = False
  splits: Optional[Callable[[Section], Tuple[str, ...]]] = None
  scalars: Optional[Callable[[ModelContext, Dict[str, Any]], Dict[str, float]]] = None
  defaults: Optional[Section] = None
  report: Optional[Callable[[str, Dict[str, Any]], "Report"]] = None
  pool: Optional[Callable[[str, Dict[Any, Dict[str, Any]]], "Report"]] = None
  cost: Optional[Callable[[Any, Section, Sizes], Cost]] = None

  @property
  def per_model(self) -> bool:
    return self.run is not None


@dataclasses.dataclass(frozen=True)
class Report:
  """A measure's part of the report.

  Attributes:
    tables: results.json table name -> flat records (one dict per row, so
      `pandas.json_normalize(results[name])` gives a tidy frame). A name the
      report or another measure writes is refused.
    lines: markdown paragraphs of its report.md section (a '## ' heading
      first); empty where it has nothing to show.
  """
  tables: Dict[str, List[Dict[str, Any]]]
  lines: List[str]


_REGISTRY: Dict[str, Measure] = {}


def _check_properties(m: Measure) -> None:
  """One line for a measure that cannot run: what it lacks or misdeclares."""
  validate.require(isinstance(m.name, str) and bool(m.name),
                   f"a measure needs a name, got {m.name!r}")
  validate.require(isinstance(m.section, str), f"measure {m.name!r}: section must be a str "
                   "(a field of config.analysis, or '')")
  validate.require(callable(m.check), f"measure {m.name!r} is registered without its 'check'")
  validate.require(m.run is not None or m.run_across is not None,
                   f"measure {m.name!r} is registered without 'run' or 'run_across'")
  if m.run is not None:
    validate.require(m.record is not None and bool(m.records), f"measure {m.name!r} runs per "
                     "model but declares no 'record' and 'records' for summary.json")
  validate.require(m.run is not None or not (m.records or m.record or m.detail_only),
                   f"measure {m.name!r} declares per-model records but has no 'run'")
  validate.require(m.pool is None or m.report is not None, f"measure {m.name!r} pools "
                   "results.json rows over seeds but declares no 'report' that writes them")
  validate.require(m.figures is None or m.run is not None,
                   f"measure {m.name!r} draws 'figures' but has no per-model 'run'")


def register(measure: Measure) -> Measure:
  """Adds a measure after those registered before it. A missing property, a
  duplicate name or section, or a record key taken is one line."""
  _check_properties(measure)
  name = measure.name
  validate.require(name not in _REGISTRY, f"measure {name!r} is registered twice")
  for other in _REGISTRY.values():
    validate.require(not measure.section or measure.section != other.section,
                     f"measure {name!r}: section {measure.section!r} is taken by measure "
                     f"{other.name!r}")
    for key in measure.records:
      validate.require(key not in other.records, f"measure {name!r} records {key!r}, which "
                       f"measure {other.name!r} records")
  for key in measure.records:
    validate.require(key not in MODEL_KEYS, f"measure {name!r} records {key!r}, which the "
                     "stage writes itself")
  validate.require(measure.run_across is None or name not in STAGE_KEYS,
                   f"measure {name!r}: summary.json[{name!r}] is the stage's own")
  _REGISTRY[name] = measure
  return measure


def unregister(name: str) -> None:
  """Removes a measure (tests that register a toy measure clean up with it)."""
  _REGISTRY.pop(name)


def names() -> Tuple[str, ...]:
  return tuple(_REGISTRY)


def get(name: str) -> Measure:
  validate.choice("analysis measure", name, names())
  return _REGISTRY[name]


def reports(workdir: str, analysis: Dict[str, Any]) -> List[Tuple[str, Report]]:
  """(name, Report) of every registered measure that declares `report` and
  recorded something in this run's analysis summary."""
  out = []
  for m in _REGISTRY.values():
    if m.report is not None:
      out.append((m.name, m.report(workdir, analysis)))
  return out


def pooled_reports(root: str, per_seed: Dict[Any, Dict[str, Any]]) -> List[Tuple[str, Report]]:
  """(name, Report) of every registered measure that declares `pool`, over the
  seeds' results.json; a measure none of them recorded gives an empty Report."""
  return [(m.name, m.pool(root, per_seed)) for m in _REGISTRY.values() if m.pool is not None]


def section_of(a: Section, m: Measure) -> Section:
  return a if not m.section else a[m.section]


def configured(a: Section) -> List[Tuple[Measure, Section]]:
  """(measure, its section) of every registered measure whose section is in
  config.analysis, in registration order."""
  return [(m, section_of(a, m)) for m in _REGISTRY.values() if not m.section or m.section in a]


def enabled(c: Section) -> bool:
  return bool(c.get("enabled", True))


def default_section(name: str) -> Section:
  """A fresh copy of a measure's declared section: config.analysis[section] = this."""
  m = get(name)
  validate.require(m.defaults is not None, f"measure {name!r} declares no defaults: its section "
                   "is in configs/parts/analysis.py")
  return copy.deepcopy(m.defaults)


def check_sections(a: Section, own: Tuple[str, ...]) -> None:
  """Every sub-section of config.analysis is the stage's own (`own`) or a
  registered measure's, holding exactly the fields the measure declares."""
  sections = {m.section: m for m in _REGISTRY.values() if m.section}
  for key in a.keys():
    if isinstance(a[key], ml_collections.ConfigDict) and key not in own:
      validate.require(key in sections, f"analysis.{key} is the section of no registered "
                       f"measure (registered: {', '.join(names())})")
  for key, m in sections.items():
    if m.defaults is None or key not in a:
      continue
    unknown = sorted(set(a[key].keys()) - set(m.defaults.keys()))
    missing = sorted(set(m.defaults.keys()) - set(a[key].keys()))
    validate.require(not unknown, f"analysis.{key}.{(unknown or [''])[0]} is not a field of "
                     f"measure {m.name!r} (its fields: {', '.join(m.defaults.keys())})")
    validate.require(not missing, f"analysis.{key} lacks {', '.join(missing)}: build it with "
                     f"analysis.measures.default_section({m.name!r})")


def planned_costs(config, sizes: Sizes, num_models: int, num_detailed: int
                  ) -> List[Tuple[str, Cost]]:
  """(name, Cost) of each enabled measure that declares one, in a run that
  analyses num_models models, num_detailed of them in detail (detail_only
  measures run on those). A job two measures share is counted at the first
  (the one that runs it: measures run in registration order)."""
  out, trained, forward = [], set(), set()
  for m, c in configured(config.analysis):
    if m.cost is None or not enabled(c):
      continue
    cost = m.cost(config, c, sizes)
    times = (num_detailed if m.detail_only else num_models) if m.per_model else 1

    def mine(jobs, seen, m=m, times=times):
      # A per-model measure's key names one model's job: one per model.
      keyed = ({(m.name, i, key): n for key, n in jobs.items() for i in range(times)}
               if m.per_model else dict(jobs))
      new = {key: n for key, n in keyed.items() if key not in seen}
      seen.update(new)
      return new

    out.append((m.name, Cost(mine(cost.train_examples, trained),
                             mine(cost.forward_examples, forward))))
  return out


def record_of(m: Measure, ctx: ModelContext, c: Section, output: Any) -> Dict[str, Any]:
  """The measure's record of one model, checked against what it declares."""
  record = m.record(ctx, c, output)
  validate.require(set(record) == set(m.records), f"measure {m.name!r} recorded "
                   f"{sorted(record)} for {ctx.model.name}, but declares {sorted(m.records)}")
  return record
