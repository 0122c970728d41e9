"""The name of an analysed model: the dense net, or a mask source at an IMP round.

Its `.name` ('dense', 'real_r01') names the model's folder under DIR/analysis
and its key in every JSON output; `ModelId.parse` reads such a name back from
disk or JSON, and is the only place that knows how a name is spelled.
"""
import dataclasses
import re
from typing import Optional

_ROUND = re.compile(r"^(?P<source>.+)_r(?P<round>\d+)$")


@dataclasses.dataclass(frozen=True)
class ModelId:
  """One analysed model.

  Attributes:
    source: the mask source ('real', 'random', 'distilled'), or 'dense'.
    round: the IMP round of its mask; None for a model without a mask.
  """
  source: str
  round: Optional[int] = None

  @property
  def name(self) -> str:
    """'dense', or SOURCE_rKK: two digits keep a source's folders in round order."""
    return self.source if self.round is None else f"{self.source}_r{self.round:02d}"

  @classmethod
  def parse(cls, name: str) -> "ModelId":
    """The model a name written by `.name` stands for ('real_r01' -> real, round 1)."""
    match = _ROUND.match(name)
    return cls(match["source"], int(match["round"])) if match else cls(name)


DENSE = ModelId("dense")
