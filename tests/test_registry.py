"""The stage registry: each stage's cache key is exactly the config it is handed."""
import pytest

from lmcjax.configs import default
from lmcjax import pipeline
from lmcjax import runtime


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


@pytest.mark.parametrize("name", list(pipeline.STAGES))
def test_key_changes_when_and_only_when_a_read_field_changes(name):
  """Over every leaf field of the default config, not a sample."""
  config = default.get_config()
  before = pipeline.stage_inputs(config, name)
  keyed = _keyed_fields(config, name)
  for path, value in _leaves(config):
    if path == "stages":
      continue  # which stages run is the pipeline's choice, checked below
    changed = default.get_config()
    _set(changed, path, _other(value))
    expected = any(k(path) for k in keyed)
    assert (pipeline.stage_inputs(changed, name) != before) == expected, (name, path)


def test_run_controls_are_handed_but_not_keyed():
  config = default.get_config()
  handed = pipeline.stage_config(config, "imp")
  assert handed.log_every_steps == config.log_every_steps
  config.checkpoint_every_steps += 7
  config.log_every_steps += 7
  assert pipeline.stage_inputs(config, "imp") == pipeline.stage_inputs(default.get_config(), "imp")


def test_a_stage_sees_only_what_it_declares():
  config = default.get_config()
  distill = pipeline.stage_config(config, "distill")
  assert set(distill.keys()) == {"data", "model", "distill", "log_every_steps",
                                 "checkpoint_every_steps"}
  with pytest.raises(AttributeError):
    _ = distill.imp  # not declared: reading it fails loudly
  imp_view = pipeline.stage_config(config, "imp")
  assert set(imp_view.analysis.keys()) == {"rounds", "targets"}  # dotted fields only


def test_every_stage_is_declared_once_with_known_dependencies():
  for name, stage in pipeline.STAGES.items():
    assert isinstance(stage, runtime.Stage) and stage.name == name
    assert set(stage.depends_on) <= set(pipeline.STAGES), name
    for field in stage.report_only:
      assert _covers(stage.reads, field), (name, field)
