"""Progress of long loops as plain log lines: done/total, rate and ETA.

Modelled on clu's periodic_actions.ReportProgress, but with no terminal
tricks: a batch job's log reads the same as a console. A line costs one
clock read per update, and the loop's results do not depend on it.
"""
import time
from typing import Any, Callable, Optional

from absl import logging
import jax

# Inner loops (probes, grid chunks, iterations) report at most this often;
# outer loops (stages, rounds, models) pass every_s=0 and report every item.
PERIOD_S = 30.0


def duration(seconds: float) -> str:
  """'45s', '12m05s', '3h07m'."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
  """Reports `what: done/total unit (x%), elapsed, rate, ETA` as an absl log line.

  update(done) logs when every_s seconds have passed since the last line,
  and at done == total if an earlier line was logged (or every_s == 0), so a
  quick loop stays silent. The rate is the mean since the loop started,
  compilation included: the ETA is pessimistic early and settles.
  """

  def __init__(self, what: str, total: int, unit: str = "steps",
               every_s: float = PERIOD_S, clock: Callable[[], float] = time.monotonic):
    self.what, self.total, self.unit, self.every_s = what, int(total), unit, every_s
    self.clock = clock
    self.start = self.last = clock()
    self.lines = 0

  def due(self, done: int) -> bool:
    if self.every_s <= 0:
      return True
    if done >= self.total:
      return self.lines > 0
    return self.clock() - self.last >= self.every_s

  def update(self, done: int, detail: str = "", wait: Optional[Any] = None) -> None:
    """Reports `done` items finished; `wait` (arrays) is synced first, so an
    asynchronously dispatched loop is timed by what it computed."""
    if not self.due(done):
      return
    if wait is not None:
      jax.block_until_ready(wait)
    now = self.clock()
    elapsed = now - self.start
    rate = done / elapsed if elapsed > 0 else float("inf")
    left = (self.total - done) / rate if 0 < rate < float("inf") else 0.0
    eta = "done" if done >= self.total else f"ETA {duration(left)}"
    logging.info("%s: %d/%d %s (%d%%) in %s, %.3g %s/s, %s%s", self.what, done, self.total,
                 self.unit, 100 * done // max(self.total, 1), duration(elapsed), rate, self.unit,
                 eta, f"; {detail}" if detail else "")
    self.last, self.lines = now, self.lines + 1
