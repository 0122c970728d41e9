"""Pooling a sweep over one non-seed axis (lmcjax/dose_response.py via aggregate)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_tables
from conftest import REPO
from lmcjax import aggregate
from lmcjax import logs
from lmcjax import sweep
from lmcjax import validate

SOURCES_AT = (("dense", 0.0, None), ("real", 0.2, 1), ("distilled", 0.2, 1), ("subset", 0.2, 1))


def _pairs(source, seed, dose_index):
  """Per-pair barriers: distilled's depend on the dose, the others only on the seed."""
  base = {"dense": 0.05, "real": 0.01, "distilled": 0.04, "subset": 0.03}[source]
  shift = 0.01 * dose_index if source == "distilled" else 0.0
  return [base + shift + 0.002 * seed + 0.001 * p for p in range(3)]


def _results(seed, dose_index, sources):
  barriers = []
  for source, sparsity, rnd in SOURCES_AT:
    if source not in sources:
      continue
    model = source if rnd is None else f"{source}_r{rnd:02d}"
    barriers.append({"model": model, "source": source, "sparsity": sparsity, "seed": seed,
                     "measured_on": "test/interpolate",
                     "error_barriers": _pairs(source, seed, dose_index),
                     "test_accuracy": [0.5, 0.52, 0.51],
                     "test_accuracy_ci": {"estimate": 0.51, "low": 0.48, "high": 0.54, "n": 1000}})
  return {"barriers": barriers}


def _set_accuracy(seed, dose_index):
  return 0.3 + 0.05 * dose_index + 0.01 * seed


def make_root(root, axes, sources=tuple(s for s, _, _ in SOURCES_AT)):
  """A sweep root of finished fake jobs: manifest, sweep_job.json, config, summary, results.

  axes: (path, values) pairs as config.sweep.axes; 'seeds.init' gives the seed,
  the position of the other axis' value the dose. sources: those analysed.
  """
  paths = [p for p, _ in axes]
  points = np.array(np.meshgrid(*[np.arange(len(v)) for _, v in axes], indexing="ij"))
  points = points.reshape(len(axes), -1).T
  jobs = []
  for i, point in enumerate(points):
    overrides = {p: axes[a][1][j] for a, (p, j) in enumerate(zip(paths, point))}
    jobs.append(sweep.Job(i, sweep.job_name(i, len(points), overrides), overrides))
  logs.write_json(os.path.join(root, sweep.MANIFEST),
                  {"num_jobs": len(jobs), "jobs": [sweep.job_record(j) for j in jobs]})
  for j, point in zip(jobs, points):
    seed = j.overrides.get("seeds.init", 0)
    dose = [int(k) for p, k in zip(paths, point) if not p.startswith("seeds.")]
    dose_index = dose[0] if dose else 0
    workdir = os.path.join(root, j.name)
    os.makedirs(workdir)
    logs.write_json(os.path.join(workdir, sweep.JOB_FILE), sweep.job_record(j))
    logs.write_json(os.path.join(workdir, "config.json"), {"stages": ["distill", "analysis"]})
    acc = _set_accuracy(seed, dose_index)
    logs.write_json(os.path.join(workdir, "summary.json"), {
        "num_test": 1000, "analysis": {},
        "distill": {"distilled": {"mean": acc}, "initial": {"mean": 0.25 + 0.01 * seed}}})
    logs.write_json(os.path.join(workdir, "results.json"), _results(seed, dose_index, sources))
  return jobs


@pytest.mark.parametrize("axis, values", [("distill.dm.iterations", (1000, 200)),
                                          ("distill.method", ("dm", "dc"))])
def test_jobs_are_grouped_by_the_one_non_seed_axis(tmp_path, axis, values):
  root = str(tmp_path)
  make_root(root, (("seeds.init", (0, 1)), (axis, values)))
  aggregate.aggregate(root)
  out = logs.read_json(os.path.join(root, "dose_response.json"))
  assert out["axis"] == axis
  # Numbers sort as numbers; names keep the sweep's order.
  ordered = sorted(values) if axis.endswith("iterations") else list(values)
  assert out["values"] == ordered
  for group in out["groups"]:
    dose_index = values.index(group["value"])
    assert len(group["jobs"]) == 2 and all(f"{axis}={group['value']}" in j for j in group["jobs"])
    assert group["seeds"] == ["0", "1"]
    barrier = {r["model"]: r for r in group["barriers"]}["distilled_r01"]
    want = np.mean([np.mean(_pairs("distilled", s, dose_index)) for s in (0, 1)])
    assert barrier["error_barrier_ci"]["estimate"] == pytest.approx(want, abs=1e-12)
    assert barrier["error_barrier_ci"]["num_seeds"] == 2
    acc = group["set_accuracy"]["distilled"]
    assert acc["estimate"] == pytest.approx(np.mean([_set_accuracy(s, dose_index) for s in (0, 1)]))
    assert acc["count"] == 2
    # subset vs distilled is among the paired comparisons of each group.
    assert any({c["a"], c["b"]} == {"distilled", "subset"} for c in group["comparisons"])
  # The references count each seed once, not once per group.
  panel = out["panels"][0]
  subset = panel["lines"]["subset_r01"]
  assert subset["num_seeds"] == 2 and subset["num_pairs"] == 6 and not subset["varies"]
  assert set(panel["lines"]) == {"real_r01", "subset_r01"}
  assert [p["value"] for p in panel["points"]["distilled_r01"]] == ordered
  for name in out["figures"]:
    assert os.path.isfile(os.path.join(root, name + ".png"))
  assert "dose_response_barrier_vs_set_accuracy" in out["figures"]
  md = open(os.path.join(root, "dose_response.md")).read()
  assert f"Dose-response over {axis} (2 values" in md
  assert not os.path.exists(os.path.join(root, "pooled.md"))


def test_sources_the_jobs_leave_out_come_from_the_reference_root(tmp_path):
  """Dose jobs with the distilled source alone, real and subset from a seed-only
  root: the same lines, tables and paired comparisons as jobs that ran them all."""
  both, dose, study = (str(tmp_path / name) for name in ("both", "dose", "study"))
  axes = (("seeds.init", (0, 1)), ("distill.dm.iterations", (200, 1000)))
  for root in both, dose, study:
    os.makedirs(root)
  make_root(both, axes)
  make_root(dose, axes, sources=("dense", "distilled"))
  make_root(study, (("seeds.init", (0, 1, 2)),))
  aggregate.aggregate(both)
  aggregate.aggregate(dose, reference_root=study)
  want, got = (logs.read_json(os.path.join(r, "dose_response.json")) for r in (both, dose))
  assert got["reference"]["seeds"] == ["0", "1"]  # seed 2 has no dose job: left out
  assert {r["model"] for r in got["reference"]["barriers"]} == {"real_r01", "subset_r01"}
  assert got["panels"][0]["lines"] == want["panels"][0]["lines"]
  assert got["panels"][0]["points"] == want["panels"][0]["points"]
  for g_want, g_got in zip(want["groups"], got["groups"]):
    assert g_got["comparisons"] == g_want["comparisons"]
  md = open(os.path.join(dose, "dose_response.md")).read()
  assert f"Reference sources (test/interpolate), from {study}" in md
  # The docs' block and figures come from dose_response.json alone.
  tables = make_tables()
  block = tables.block([dose], cpu_flag="a test CPU")
  assert "from `dose/` (dose_response.json)" in block
  assert f"**Reference sources (test/interpolate), from {study}**" in block
  assert "distilled barrier % [95% CI]" in block and "*distill.dm.iterations = 200*" in block
  drawn = tables.redraw_pooled_figures(dose, str(tmp_path / "figures"), "c10dose")
  assert {os.path.basename(p) for p in drawn} >= {
      "c10dose_barrier_vs_set_accuracy.png", "c10dose_set_accuracy.png"}


def test_a_reference_root_must_cover_the_seeds_and_serve_a_dose_response(tmp_path):
  dose, study, seeds_only = (str(tmp_path / name) for name in ("dose", "study", "seeds"))
  for root in dose, study, seeds_only:
    os.makedirs(root)
  make_root(dose, (("seeds.init", (0, 1)), ("distill.dm.iterations", (200, 1000))),
            sources=("dense", "distilled"))
  make_root(study, (("seeds.init", (0,)),))
  make_root(seeds_only, (("seeds.init", (0, 1)),))
  cases = ((dose, study, "has no finished analysis for seed(s) 1"),
           (seeds_only, study, "differ in no non-seed axis"),
           (dose, str(tmp_path / "nowhere"), "nowhere"))
  for root, reference, words in cases:
    with pytest.raises(validate.InputError) as e:
      aggregate.aggregate(root, reference_root=reference)
    assert "\n" not in str(e.value) and words in str(e.value)


def test_a_reference_the_axis_changes_is_flagged(tmp_path):
  root = str(tmp_path)
  make_root(root, (("seeds.init", (0, 1)), ("distill.ipc", (10, 50))))
  # ipc changes the starting images: give subset other pairs in the second group.
  for name in os.listdir(root):
    if "distill.ipc=50" in name:
      path = os.path.join(root, name, "results.json")
      results = logs.read_json(path)
      for r in results["barriers"]:
        if r["source"] == "subset":
          r["error_barriers"] = [b + 0.01 for b in r["error_barriers"]]
      logs.write_json(path, results)
  aggregate.aggregate(root)
  lines = logs.read_json(os.path.join(root, "dose_response.json"))["panels"][0]["lines"]
  assert lines["subset_r01"]["varies"] and not lines["real_r01"]["varies"]


def test_seed_only_sweeps_still_pool_replicates(tmp_path):
  root = str(tmp_path)
  make_root(root, (("seeds.init", (0, 1, 2)),))
  aggregate.aggregate(root)
  assert os.path.isfile(os.path.join(root, "pooled.md"))
  assert not os.path.exists(os.path.join(root, "dose_response.md"))


def test_two_differing_non_seed_axes_are_refused_in_one_line(tmp_path):
  root = str(tmp_path)
  make_root(root, (("seeds.init", (0,)), ("distill.dm.iterations", (200, 1000)),
                   ("distill.ipc", (10, 50))))
  with pytest.raises(validate.InputError) as e:
    aggregate.aggregate(root)
  message = str(e.value)
  assert "\n" not in message
  assert "2 non-seed axes, distill.dm.iterations and distill.ipc" in message
  assert os.path.isfile(os.path.join(root, "aggregate.md"))  # the merge itself is written
  assert not os.path.exists(os.path.join(root, "dose_response.md"))
  done = subprocess.run([sys.executable, os.path.join(REPO, "launch", "aggregate.py"),
                         "--workdir", root], capture_output=True, text=True, timeout=120, cwd=REPO)
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1].startswith("lmcjax: error: the finished jobs differ")
