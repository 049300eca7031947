"""Generated ACRE: answers agree with a brute-force check of every blicket hypothesis; splits hold apart."""
import itertools

import numpy as np
import pytest

from lrr_jax.data.worlds import acre


def brute_force_answer(problem: acre.AcreProblem, query_ids) -> str:
  """on / off / undetermined over all blicket assignments consistent with the context (disjunctive rule)."""
  lights = set()
  for hypothesis in itertools.product([False, True], repeat=len(problem.objects)):
    if all(any(hypothesis[k] for k in ids) == light for ids, light in problem.context):
      lights.add(any(hypothesis[k] for k in query_ids))
  assert lights, "no hypothesis explains the context"
  return "undetermined" if len(lights) == 2 else ("on" if True in lights else "off")


@pytest.mark.parametrize("split", acre.SPLITS)
def test_answers_agree_with_brute_force_for_every_query_type(split):
  for train in (True, False):
    for problem in acre.generate(acre.AcreConfig(split=split), 60, seed=1, train=train):
      assert all(any(problem.blickets[k] for k in ids) == light for ids, light in problem.context)
      assert [kind for _, kind, _ in problem.queries] == list(acre.QUERY_TYPES)
      for ids, kind, answer in problem.queries:
        assert answer == brute_force_answer(problem, ids) == acre.rule_answer(problem, ids), kind
        assert answer == {"indirect": "on", "screen_off": "off", "potential": "undetermined"}.get(kind, answer)
      assert problem.context_frames.shape == (6, 32, 32, 3) and problem.query_frames.shape == (4, 32, 32, 3)


def test_every_query_type_and_answer_occurs():
  problems = acre.generate(acre.AcreConfig(), 100, seed=2)
  seen = {(kind, answer) for p in problems for _, kind, answer in p.queries}
  assert {k for k, _ in seen} == set(acre.QUERY_TYPES)
  assert {a for _, a in seen} == set(acre.ANSWERS)


def test_same_seed_same_bytes():
  a, b = (acre.generate(acre.AcreConfig(), 10, seed=3) for _ in range(2))
  assert all(x.context_frames.tobytes() == y.context_frames.tobytes() and x.queries == y.queries
             for x, y in zip(a, b))


def test_compositional_split_holds_out_shape_colour_combinations():
  config = acre.AcreConfig(split="compositional")
  combos = lambda train: {(o[0], o[2]) for p in acre.generate(config, 80, 4, train) for o in p.objects}
  assert combos(True) and combos(False) and not combos(True) & combos(False)


def test_systematic_split_differs_in_lit_context_panels():
  config = acre.AcreConfig(split="systematic")
  lit = lambda train: {sum(light for _, light in p.context) for p in acre.generate(config, 40, 5, train)}
  assert max(lit(True)) <= 3 < min(lit(False))


def test_query_types_follow_acres_rules_on_a_hand_made_context():
  context = [((0,), True), ((1,), False), ((0, 1), True), ((2, 3), True), ((3,), False), ((4, 5), True),
             ((4,), True), ((6, 7), False)]
  assert acre.classify(context) == {0: ("direct", 2), 1: ("screen_off", 0), 2: ("indirect", 2),
                                    3: ("screen_off", 0), 4: ("direct", 2), 5: ("potential", 1),
                                    6: ("direct", 0), 7: ("direct", 0)}


def test_light_is_drawn_as_the_context_says():
  problem = acre.generate(acre.AcreConfig(), 1, seed=6)[0]
  lamp = problem.context_frames[:, int(0.14 * 32), int(0.85 * 32)]
  np.testing.assert_array_equal(lamp[:, 0] > 200, [light for _, light in problem.context])
