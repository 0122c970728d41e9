"""What finding IMP's masks cost in data: examples seen and distinct examples per source.

The paper's claim that distilled IMP needs "N x fewer training points" is
real_over_distilled in cost_summary (real_over_SOURCE for every source that
prunes on a small set, lmcjax/mask_sources.py); imp.jsonl carries each
round's cost.
"""
from typing import Any, Dict, List, Tuple

from lmcjax import mask_sources


def per_round(markers: List[Dict[str, Any]]) -> List[Tuple[int, int]]:
  """(examples seen, distinct examples) spent finding mask_k, for k = 0..len(markers).

  Sums the runs pruned in rounds < k. Distinct points add up over datasets
  (real, or a small set: distilled, starting images), taking per dataset the
  most one run used: exact when every run covers its dataset at least once, as
  IMP's runs do.
  """
  seen, distinct, out = 0, {}, []
  for m in markers:
    out.append((seen, sum(distinct.values())))
    run = m["prune_run"]
    if run:
      seen += run["examples_seen"]
      distinct[run["data"]] = max(distinct.get(run["data"], 0), run["distinct_examples"])
  out.append((seen, sum(distinct.values())))
  return out


def results_rows(markers: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """imp.jsonl rows: each round's marker with the data cost of finding its mask."""
  rows = []
  for m, (seen, distinct) in zip(markers, per_round(markers)):
    row = {k: v for k, v in m.items() if k != "prune_run"}
    row.update(mask_examples_seen=seen, mask_distinct_examples=distinct)
    rows.append(row)
  return rows


def ratio_key(source: str) -> str:
  """cost_summary's key of real IMP's cost over `source`'s ('real_over_distilled')."""
  return f"real_over_{source}"


def cost_summary(markers_by_source: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
  """Per source: the data that finding all its masks took, and what retraining took.

  real_over_SOURCE, for each source that prunes on a small set, is the paper's
  "N x fewer training points" factor (real_over_distilled).
  """
  out = {}
  for source, markers in markers_by_source.items():
    seen, distinct = per_round(markers)[-1]
    out[source] = {"mask_examples_seen": seen, "mask_distinct_examples": distinct,
                   "retrain_examples_seen": sum(m["examples_seen"] for m in markers)}
  real = out.get("real")
  for source in markers_by_source:
    small = out[source]
    if real and mask_sources.get(source).small_set and small["mask_examples_seen"]:
      out[ratio_key(source)] = {
          "examples_seen": real["mask_examples_seen"] / small["mask_examples_seen"],
          "distinct_examples": real["mask_distinct_examples"] / small["mask_distinct_examples"]}
  return out
