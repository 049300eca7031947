"""Bounds on what a pickle may build, checked by a linear scan of its opcodes before it is unpickled.

A pickle is a program for a stack machine with a memo: a few hundred bytes can build objects whose expanded
size is exponential (tuples of tuples sharing one memo entry twice, nested 64 deep), and hashing such a tuple
as a dict key, or printing it in an error, then never ends. `check` runs the program on stand-ins that record
only each object's nesting depth and expanded size (the objects below it, a shared one counted each time it is
reached), so that the unpickler sees only programs whose every object is small: the cost of anything that walks
an object (hash, repr, comparison) stays within a constant factor of the file's size.
"""
import dataclasses
import pickle
import pickletools

MAX_OPCODES = 50_000_000  # a state dict of 10k tensors takes ~300k
MAX_MEMO = 5_000_000  # memo entries
MAX_DEPTH = 32  # objects within objects (a state dict's tensors: ~6)
EXPANSION = 4  # an object's expanded size: at most this many per byte of the whole pickle (a state dict: < 1)
SLACK = 4096
# Opcodes that change the object below their arguments rather than push a new one.
MUTATORS = frozenset(("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"))
MEMO_PUTS = frozenset(("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"))
MEMO_GETS = frozenset(("GET", "BINGET", "LONG_BINGET"))


@dataclasses.dataclass
class _Node:
  """What the scan knows of one object: its depth, its expanded size, whether it is inside another yet."""
  depth: int = 1
  size: int = 1
  placed: bool = False


class _Scan:
  """The pickle machine run on `_Node`s: a stack, its marks and the memo."""

  def __init__(self, max_size: int):
    self.stack: list[_Node] = []
    self.marks: list[int] = []
    self.memo: dict[int, _Node] = {}
    self.max_size = max_size

  def pop(self, before: list) -> list[_Node]:
    """The arguments `before` names (those below a mark, then the mark's slice), in stack order."""
    if pickletools.markobject in before:
      if not self.marks:
        raise pickle.UnpicklingError("it pops a mark that was never pushed")
      sliced, self.stack = self.stack[self.marks[-1]:], self.stack[:self.marks.pop()]
      below = before.index(pickletools.markobject)
    else:
      sliced, below = [], len(before)
    if below > len(self.stack):
      raise pickle.UnpicklingError("it pops more objects than its stack holds")
    popped = self.stack[len(self.stack) - below:] if below else []
    del self.stack[len(self.stack) - below:]
    return popped + sliced

  def adopt(self, parent: _Node, children: list[_Node], pos: int) -> _Node:
    """`parent` holding `children` too: its depth and expanded size checked against the limits."""
    for child in children:
      child.placed = True
      parent.depth = max(parent.depth, child.depth + 1)
      parent.size += child.size
    if parent.depth > MAX_DEPTH:
      raise pickle.UnpicklingError(f"its objects nest more than {MAX_DEPTH} deep (at byte {pos}); a state dict's "
                                   "nest a few deep")
    if parent.size > self.max_size:
      raise pickle.UnpicklingError(
          f"an object (at byte {pos}) expands to more than {self.max_size} objects (shared objects counted each "
          f"time they are reached), more than {EXPANSION} per byte of the pickle")
    return parent

  def step(self, name: str, opcode: pickletools.OpcodeInfo, arg, pos: int) -> None:
    if name in MEMO_PUTS:
      if not self.stack:
        raise pickle.UnpicklingError(f"it memoizes from an empty stack (at byte {pos})")
      index = len(self.memo) if name == "MEMOIZE" else arg
      if not 0 <= index < MAX_MEMO:  # the unpickler sizes its memo by the largest index written
        raise pickle.UnpicklingError(f"it writes memo entry {index} (at byte {pos}); at most {MAX_MEMO} are allowed")
      self.memo[index] = self.stack[-1]
    elif name in MEMO_GETS:
      if arg not in self.memo:
        raise pickle.UnpicklingError(f"it reads memo entry {arg}, which was never written (at byte {pos})")
      self.stack.append(self.memo[arg])
    elif name == "MARK":
      self.marks.append(len(self.stack))
    elif name == "DUP":
      self.stack.extend(self.pop(opcode.stack_before) * 2)
    elif name in MUTATORS:
      container, *children = self.pop(opcode.stack_before)
      if container.placed:  # its holders' depth and size would no longer be what the scan found
        raise pickle.UnpicklingError(f"it changes an object already inside another (at byte {pos}); a state "
                                     "dict's objects are complete when placed")
      self.stack.append(self.adopt(container, children, pos))
    else:
      children = self.pop(opcode.stack_before)
      self.stack.extend(self.adopt(_Node(), children, pos) for _ in opcode.stack_after)


def check(data: bytes) -> None:
  """Raise `pickle.UnpicklingError` (what is wrong, and where) unless every object the pickle `data` builds
  nests at most MAX_DEPTH deep and expands to at most EXPANSION objects per byte of `data`; the memo and the
  number of opcodes are bounded too. Time and memory linear in len(data)."""
  scan = _Scan(EXPANSION * len(data) + SLACK)
  for opcode, arg, pos in _opcodes(data):
    scan.step(opcode.name, opcode, arg, pos)


def _opcodes(data: bytes):
  try:
    for count, op in enumerate(pickletools.genops(data)):
      if count >= MAX_OPCODES:
        raise pickle.UnpicklingError(f"it has more than {MAX_OPCODES} opcodes")
      yield op
  except ValueError as e:  # genops: an unknown opcode, a truncated argument, no STOP
    raise pickle.UnpicklingError(f"it is not a valid pickle: {e}") from e
