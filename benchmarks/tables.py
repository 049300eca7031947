"""What the reproduction tables are (`benchmarks.reproduce`): each table's runs in a config's sweep, the labels
naming its rows, its metrics, and the papers' orderings between its cells that `--seeds` judges.

Tables:
  cater_static, cater_moving: LRR's rationale ablation on generated CATER (direct answer, rationale without
    surrogate tasks, without stage tags, full), one camera each; the LLaVA-o1 training comparison
    (direct vs no stage tags vs stage tags) is the same runs' direct / no_tags / full rows.
  cater_encoder: the video encoder's ablation on the full rationale, static camera: two streams vs the static
    stream alone, and temporal attention over all earlier frames vs only the previous tau (configs/cater.py).
  acre: the ablation (direct, no surrogate tasks, full) on the three generated ACRE splits.
"""
import dataclasses
from typing import Callable

from lrr_jax.data.worlds import acre
from lrr_jax.evaluation import intervals

Ordering = intervals.Ordering


@dataclasses.dataclass(frozen=True)
class Table:
  config: str  # the config file whose sweep has the runs
  keep: Callable[[dict[str, str]], bool]  # which of the sweep's runs, by their labels (`labels`)
  keys: tuple[str, ...]  # the labels that name a row
  metrics: tuple[str, ...]  # the evaluator's names; the first is the plotted headline
  defaults: dict[str, str] = dataclasses.field(default_factory=dict)  # a key a run's name lacks


def rationale_run(camera: str) -> Callable[[dict[str, str]], bool]:
  """The rationale ablation's runs with this camera (no encoder overrides)."""
  return lambda run: run.get("camera") == camera and not any(k.startswith("model.") for k in run)


CATER_METRICS = ("top1", "top5", "l1", "well_formed")
TABLES = {
    "cater_static": Table("configs/cater.py", rationale_run("static"), ("variant",), CATER_METRICS),
    "cater_moving": Table("configs/cater.py", rationale_run("moving"), ("variant",), CATER_METRICS),
    # The video encoder's ablation on the full rationale, static camera: both streams and all earlier frames
    # (the full run of cater_static), the static stream alone, temporal attention over only tau frames back.
    "cater_encoder": Table("configs/cater.py",
                           lambda run: (run.get("variant"), run.get("camera")) == ("full", "static"),
                           ("model.video.two_stream", "model.video.temporal_window"), CATER_METRICS,
                           {"model.video.two_stream": "True", "model.video.temporal_window": "0"}),
    "acre": Table("configs/acre.py", lambda run: True, ("split", "variant"),
                  ("accuracy", *(f"query_type/{q}" for q in acre.QUERY_TYPES), "well_formed")),  # the evaluator's
}


def labels(name: str) -> dict[str, str]:
  """'variant=direct,camera=static' -> {'variant': 'direct', 'camera': 'static'}."""
  return dict(part.split("=", 1) for part in name.split(",") if "=" in part)


def cell_name(table: str, row_labels: dict[str, str]) -> str:
  """A row's name from its table keys: 'variant=full', 'split=iid,variant=direct'."""
  spec = TABLES[table]
  named = {**spec.defaults, **row_labels}
  return ",".join(f"{key}={named.get(key)}" for key in spec.keys)


def _rationale_orderings(prefix: str = "", metric: str = "top1", tags: bool = True) -> list[Ordering]:
  """LRR's full rationale > without surrogate tasks > direct; LLaVA-o1's stage tags > none."""
  cell = lambda variant: f"{prefix}variant={variant}"
  orderings = [Ordering("full > no surrogate tasks", cell("full"), cell("no_surrogate"), metric),
               Ordering("no surrogate tasks > direct", cell("no_surrogate"), cell("direct"), metric),
               Ordering("full > direct", cell("full"), cell("direct"), metric)]
  if tags:
    orderings.append(Ordering("tags > no tags", cell("full"), cell("no_tags"), metric))
  return orderings


# The papers' orderings between a table's cells (`cell_name`), each on the table's headline metric.
ORDERINGS = {
    "cater_static": _rationale_orderings(),
    "cater_moving": _rationale_orderings(),
    "cater_encoder": [Ordering("two-stream > one-stream",
                               "model.video.two_stream=True,model.video.temporal_window=0",
                               "model.video.two_stream=False,model.video.temporal_window=0", "top1")],
    "acre": [dataclasses.replace(o, name=f"{split}: {o.name}")
             for split in ("iid", "compositional", "systematic")
             for o in _rationale_orderings(f"split={split},", "accuracy", tags=False)],
}
# LLaVA-o1's search ordering (its Table 5), between cells named by strategy (`lrr_jax.inference.search`), for a
# search table whose cells give per-record outcomes of each strategy on a trained run's seeds.
SEARCH_ORDERINGS = [
    Ordering("stage-level > best-of-N", "strategy=stage_beam", "strategy=best_of_n", "top1"),
    Ordering("best-of-N > greedy", "strategy=best_of_n", "strategy=greedy", "top1"),
    Ordering("sentence-level not above greedy", "strategy=sentence_beam", "strategy=greedy", "top1", "not_above"),
]
