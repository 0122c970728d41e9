"""The stage registry: each stage's cache key is exactly the config it is handed."""
import pytest

from lmcjax.configs import default
from lmcjax import pipeline
from lmcjax import validate
from lmcjax.stages import base

NUM_TRAIN = 4000  # MNIST-5k's training split: what needs.rewind_steps is computed for


def _config(raw=None):
  """The default config as the pipeline hands it over: with config.needs."""
  return pipeline.with_needs(raw or default.get_config(), NUM_TRAIN)


def _leaves(node, prefix=""):
  for key in node.keys():
    value = node[key]
    path = f"{prefix}{key}"
    if hasattr(value, "keys"):
      yield from _leaves(value, path + ".")
    else:
      yield path, value


def _other(value):
  """A value of the same type that differs from `value`."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value + 1
  if isinstance(value, str):
    return value + "_changed"
  if isinstance(value, tuple):
    return () if value else (1,)
  raise TypeError(f"no perturbation for {value!r}")


def _set(config, path, value):
  *parents, leaf = path.split(".")
  node = config
  for key in parents:
    node = node[key]
  node[leaf] = value


def _covers(reads, path):
  return any(path == r or path.startswith(r + ".") for r in reads)


def _keyed_fields(config, name, downstream=False):
  """The fields a stage's key must depend on: its reads and its upstreams'."""
  stage = pipeline.STAGES[name]
  fields = [r for r in stage.reads if not (downstream and _covers(stage.report_only, r))]
  dropped = stage.report_only if downstream else ()
  keyed = [lambda p, f=tuple(fields), d=tuple(dropped): _covers(f, p) and not _covers(d, p)]
  for upstream in stage.depends_on:
    if upstream in config.stages:
      keyed += _keyed_fields(config, upstream, downstream=True)
  return keyed


def _needs_read(config, name):
  """The needs.* fields a stage's key depends on, its own and its upstreams'."""
  stage = pipeline.STAGES[name]
  read = {r for r in stage.reads if r.startswith("needs.")}
  for upstream in stage.depends_on:
    if upstream in config.stages:
      read |= _needs_read(config, upstream)
  return read


@pytest.mark.parametrize("name", list(pipeline.STAGES))
def test_key_changes_when_and_only_when_a_read_field_changes(name):
  """Over every leaf field of the default config, not a sample."""
  config = _config()
  before = pipeline.stage_inputs(config, name)
  keyed = _keyed_fields(config, name)
  needs_read = _needs_read(config, name)
  for path, value in _leaves(default.get_config()):
    if path == "stages":
      continue  # which stages run is the pipeline's choice, checked below
    changed = default.get_config()
    _set(changed, path, _other(value))
    try:
      changed = _config(changed)
    except validate.InputError:
      continue  # e.g. a rewind step beyond the run: refused before any key is taken
    # A field read by a stage downstream changes this stage's key only through
    # the steps and rounds it needs (config.needs), never by itself.
    moved_needs = any(changed.needs[f.split(".")[1]] != config.needs[f.split(".")[1]]
                      for f in needs_read)
    expected = any(k(path) for k in keyed) or moved_needs
    assert (pipeline.stage_inputs(changed, name) != before) == expected, (name, path)


def test_run_controls_are_handed_but_not_keyed():
  config = _config()
  handed = pipeline.stage_config(config, "imp")
  assert handed.log_every_steps == config.log_every_steps
  config.checkpoint_every_steps += 7
  config.log_every_steps += 7
  assert pipeline.stage_inputs(config, "imp") == pipeline.stage_inputs(_config(), "imp")


def test_a_stage_sees_only_what_it_declares():
  config = _config()
  distill = pipeline.stage_config(config, "distill")
  assert set(distill.keys()) == {"data", "model", "distill", "log_every_steps",
                                 "checkpoint_every_steps"}
  with pytest.raises(AttributeError):
    _ = distill.imp  # not declared: reading it fails loudly
  imp_view = pipeline.stage_config(config, "imp")
  assert "analysis" not in imp_view  # an upstream stage never reads downstream config
  assert set(imp_view.needs.keys()) == {"imp_rounds"}  # dotted fields only
  assert "analysis" not in pipeline.stage_config(config, "train")


def test_needs_collect_what_the_configured_stages_declare():
  raw = default.get_config()
  raw.analysis.rounds = (1, 2)
  raw.imp.rewind_step = 7
  got = pipeline.needs(raw, NUM_TRAIN)
  assert got["imp_rounds"] == (1, 2)
  assert 7 in got["rewind_steps"]
  raw.stages = ("train", "imp")  # no analysis: nothing reads its rounds
  assert pipeline.needs(raw, NUM_TRAIN)["imp_rounds"] == ()
  # Neither rounds nor targets: the analysis reads IMP's last round, and says so.
  last = default.get_config()
  last.analysis.rounds, last.analysis.targets = (), ()
  assert pipeline.needs(last, NUM_TRAIN)["imp_rounds"] == (last.imp.rounds,)


def _stage(name, depends_on=()):
  return base.Stage(name, run=lambda *a: {}, check_config=lambda c: None, reads=(),
                    depends_on=depends_on)


def test_a_stage_declared_twice_is_refused():
  with pytest.raises(validate.InputError, match="stage 'train' is declared twice"):
    pipeline.registry((_stage("train"), _stage("imp"), _stage("train")))
  with pytest.raises(validate.InputError, match="depends on 'nowhere'"):
    pipeline.registry((_stage("imp", depends_on=("nowhere",)),))


@pytest.mark.parametrize("stages,match", [
    (("train", "analysis", "imp"), "lists 'analysis' before 'imp'"),
    (("report", "distill"), "lists 'report' before 'distill'"),
    (("train", "train"), "lists 'train' twice"),
])
def test_a_stage_listed_before_one_it_depends_on_is_one_line(stages, match):
  config = default.get_config()
  config.stages = stages
  with pytest.raises(validate.InputError, match=match):
    pipeline.check_config(config)


def test_report_only_fields_are_read_fields():
  for name, stage in pipeline.STAGES.items():
    for field in stage.report_only:
      assert _covers(stage.reads, field), (name, field)
