"""lmcjax.progress: rate and ETA lines at a period, silent for quick loops."""
import logging

import pytest

from lmcjax import progress


class _Clock:
  """A clock the test advances by hand, so the lines do not depend on machine speed."""

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def _lines(caplog):
  return [r.getMessage() for r in caplog.records if r.name == "absl"]


@pytest.fixture(autouse=True)
def _info(caplog):
  caplog.set_level(logging.INFO, logger="absl")


def test_every_item_of_an_outer_loop_gets_a_line_with_rate_and_eta(caplog):
  clock = _Clock()
  shown = progress.Progress("imp real", 4, "rounds", every_s=0, clock=clock)
  for done in range(1, 5):
    clock.now += 30.0
    shown.update(done, f"round {done - 1}")
  assert _lines(caplog) == [
      "imp real: 1/4 rounds (25%) in 30s, ETA pending; round 0",
      "imp real: 2/4 rounds (50%) in 1m00s, 0.0333 rounds/s, ETA 1m00s; round 1",
      "imp real: 3/4 rounds (75%) in 1m30s, 0.0333 rounds/s, ETA 30s; round 2",
      "imp real: 4/4 rounds (100%) in 2m00s, 0.0333 rounds/s, done; round 3"]


def test_an_inner_loop_reports_once_per_period_and_a_quick_one_stays_silent(caplog):
  clock = _Clock()
  quick = progress.Progress("probes", 10, "probes", every_s=30.0, clock=clock)
  for done in range(1, 11):
    clock.now += 1.0
    quick.update(done)
  assert not _lines(caplog)
  slow = progress.Progress("grid", 100, "points", every_s=30.0, clock=clock)
  for done in range(1, 101):
    clock.now += 1.0
    slow.update(done)
  lines = _lines(caplog)
  assert len(lines) == 4 and lines[0].startswith("grid: 30/100 points (30%) in 30s, 1 points/s")
  assert lines[-1].startswith("grid: 100/100 points (100%) in 1m40s") and lines[-1].endswith("done")


def test_the_rate_and_eta_leave_out_the_first_item_that_compiles(caplog):
  # The CIFAR distillation's shape: 1m56s for the first iteration (compiling),
  # then about 1 s each. Counting the first put the ETA at 32h16m, then 43m24s
  # at 6%; the whole loop took 16 min.
  clock = _Clock()
  shown = progress.Progress("distill", 1000, "iterations", every_s=30.0, clock=clock)
  clock.now += 116.0
  shown.update(1)
  for done in range(2, 1001):
    clock.now += 1.0
    shown.update(done)
  lines = _lines(caplog)
  assert lines[0] == "distill: 1/1000 iterations (0%) in 1m56s, ETA pending"
  # 30 iterations in the 30 s since the first: 1/s, 969 left.
  assert lines[1] == "distill: 31/1000 iterations (3%) in 2m26s, 1 iterations/s, ETA 16m09s"
  assert lines[-1] == "distill: 1000/1000 iterations (100%) in 18m35s, 1 iterations/s, done"


def test_a_loop_done_at_its_first_update_reports_no_rate(caplog):
  clock = _Clock()
  shown = progress.Progress("stages", 1, "stages", every_s=0, clock=clock)
  clock.now += 5.0
  shown.update(1)
  assert _lines(caplog) == ["stages: 1/1 stages (100%) in 5s, done"]


@pytest.mark.parametrize("seconds,text", [(0.4, "0s"), (59.6, "1m00s"), (125, "2m05s"),
                                          (3 * 3600 + 7 * 60 + 20, "3h07m")])
def test_durations_read_at_a_glance(seconds, text):
  assert progress.duration(seconds) == text
