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
  quick loop stays silent. The rate counts from the first update on: the
  first item's time is mostly compilation (1m56s for the first of 1,000
  distillation iterations that took 16 min in all), and counting it put the
  ETA at 32h. Until a second update the line says the ETA is pending.
  """

  def __init__(self, what: str, total: int, unit: str = "steps",
               every_s: float = PERIOD_S, clock: Callable[[], float] = time.monotonic):
    self.what, self.total, self.unit, self.every_s = what, int(total), unit, every_s
    self.clock = clock
    self.start = self.last = clock()
    self.lines = 0
    self.first = None  # (done, time) at the first update: where the rate starts

  def due(self, done: int) -> bool:
    if self.every_s <= 0:
      return True
    if done >= self.total:
      return self.lines > 0
    return self.clock() - self.last >= self.every_s

  def update(self, done: int, detail: str = "", wait: Optional[Any] = None) -> None:
    """Reports `done` items finished; `wait` (arrays) is synced first, so an
    asynchronously dispatched loop is timed by what it computed."""
    if self.first is None:
      if wait is not None:  # so the first item's compute, not only its dispatch, is excluded
        jax.block_until_ready(wait)
      self.first = (done, self.clock())
    if not self.due(done):
      return
    if wait is not None:
      jax.block_until_ready(wait)
    now = self.clock()
    logging.info("%s: %d/%d %s (%d%%) in %s, %s%s", self.what, done, self.total, self.unit,
                 100 * done // max(self.total, 1), duration(now - self.start),
                 self._rate_and_eta(done, now), f"; {detail}" if detail else "")
    self.last, self.lines = now, self.lines + 1

  def _rate_and_eta(self, done: int, now: float) -> str:
    """'2.5 steps/s, ETA 1m00s', over the items after the first update."""
    first_done, first_time = self.first
    items, seconds = done - first_done, now - first_time
    rate = f"{items / seconds:.3g} {self.unit}/s, " if items > 0 and seconds > 0 else ""
    if done >= self.total:
      return rate + "done"
    if not rate:
      return "ETA pending"
    return rate + f"ETA {duration((self.total - done) * seconds / items)}"
