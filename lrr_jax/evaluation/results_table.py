"""The printed results table's rows: every score with 3 decimals, the grounding's per-frame accuracies, fact
counts and answers by case each folded into one row (`lrr_jax.evaluation.grounding` names the scores)."""
import re
from typing import Any

from lrr_jax.evaluation import grounding

PREFIX = grounding.PREFIX


def table_rows(scores: dict[str, Any]) -> list[tuple[str, str]]:
  """The printed table's rows: each score with 3 decimals, but folded into one row each (per dataset prefix of a
  mixture): the per-frame accuracies (`grounding/frame_acc t=0..T-1`), the facts stated / missing / malformed,
  and the answer by case with its record counts."""
  rows: list[tuple[str, str]] = []
  folded: dict[tuple[str, str], list] = {}
  patterns = {"frame": rf"(.*{PREFIX})frame(\d+)_acc", "facts": rf"(.*{PREFIX})(stated|missing|malformed|num_facts)",
              "case": r"(.*?)(?:top1|count)/(\w+_at_end|moved|never_moved)"}
  for key, value in scores.items():
    kind, match = next(((k, m) for k, p in patterns.items() if (m := re.fullmatch(p, key))), (None, None))
    if match is None:
      rows.append((key, f"{value:.3f}"))
      continue
    if (match.group(1), kind) not in folded:
      folded[(match.group(1), kind)] = []
      rows.append((f"\x00{match.group(1)}\x00{kind}", ""))
    folded[(match.group(1), kind)].append((match.group(2), key, value))
  return [_folded_row(key, folded) if key.startswith("\x00") else (key, text) for key, text in rows]


def _folded_row(placeholder: str, folded: dict[tuple[str, str], list]) -> tuple[str, str]:
  _, prefix, kind = placeholder.split("\x00")
  parts = folded[(prefix, kind)]
  if kind == "frame":
    frames = sorted((int(t), v) for t, _, v in parts)
    return (f"{prefix}frame_acc t={frames[0][0]}..{frames[-1][0]}", " ".join(f"{v:.2f}" for _, v in frames))
  if kind == "facts":
    value = {name: v for name, _, v in parts}
    shares = " / ".join(f"{value[n]:.2f}" for n in ("stated", "missing", "malformed") if n in value)
    return (f"{prefix}stated / missing / malformed", f"{shares} of {value.get('num_facts', 0):.0f} facts")
  cases = {}
  for name, key, v in parts:
    cases.setdefault(name, {})["count" if "count/" in key else "top1"] = v
  text = "; ".join(f"{name} {c.get('top1', float('nan')):.2f} ({c.get('count', 0):.0f})" for name, c in cases.items())
  return (f"{prefix}top1 by case (records)", text)

