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
      "imp real: 1/4 rounds (25%) in 30s, 0.0333 rounds/s, ETA 1m30s; round 0",
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


@pytest.mark.parametrize("seconds,text", [(0.4, "0s"), (59.6, "1m00s"), (125, "2m05s"),
                                          (3 * 3600 + 7 * 60 + 20, "3h07m")])
def test_durations_read_at_a_glance(seconds, text):
  assert progress.duration(seconds) == text
