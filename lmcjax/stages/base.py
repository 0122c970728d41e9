"""The `Stage` record: what one pipeline stage reads, needs, depends on and writes."""
import dataclasses
from typing import Any, Callable, Dict, Iterable, Tuple


def _nothing(*args) -> Tuple[int, ...]:
  del args
  return ()


@dataclasses.dataclass(frozen=True)
class Stage:
  """One pipeline stage, declared by its own module as STAGE and listed once in
  pipeline.STAGES.

  reads: the config fields the stage is handed (sections like 'train' or
  dotted fields like 'analysis.rounds'). run() sees a config holding only
  these (plus the pipeline's run controls), so a field read but not declared
  fails loudly, and the cache key is exactly what the stage was handed.
  depends_on: earlier stages whose files it reads; their keys join its own,
  and config.stages must list them before it.
  output_dirs(workdir): what it writes, moved aside when its inputs change.
  report_only: fields in `reads` that change this stage's report but not the
  files later stages read, so later stages do not see them.
  always_run: run even when finished with the same inputs (cheap readers).
  rewind_steps(config, num_train): the steps of the dense run this stage
  starts from, which the train stage saves.
  imp_rounds(config): the IMP rounds whose trained networks this stage reads.
  Both are called with the whole config, and read only the fields this stage
  declares; the pipeline collects them over config.stages and hands the union
  to every stage that reads 'needs.rewind_steps' or 'needs.imp_rounds', so an
  upstream stage never reads a downstream stage's config.
  """
  name: str
  run: Callable[..., Dict[str, Any]]
  check_config: Callable[[Any], None]
  reads: Tuple[str, ...]
  depends_on: Tuple[str, ...] = ()
  output_dirs: Callable[[str], Tuple[str, ...]] = lambda workdir: ()
  report_only: Tuple[str, ...] = ()
  always_run: bool = False
  rewind_steps: Callable[[Any, int], Iterable[int]] = _nothing
  imp_rounds: Callable[[Any], Iterable[int]] = _nothing
