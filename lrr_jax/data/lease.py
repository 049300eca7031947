"""One run per workdir: a lease object `<workdir>/lease.json`, on local disk or gs://.

A run claims its workdir before any work by creating the lease atomically (local: `O_CREAT | O_EXCL`; gs://: an
upload conditioned on `ifGenerationMatch=0`). The lease holds the holder's host, pid, start time and the time it
was last renewed; a background thread renews it every `stale_after / 4` seconds while the process lives. A
second claim is refused with `WorkdirInUse`, naming the holder. A lease is taken over only when it is stale:
not renewed for `stale_after` seconds (by the holder's clock: hosts' clocks are assumed to agree to well under
that), or held by a process of this host (same hostname and boot) that no longer exists, so that a run killed
with SIGKILL restarts at once on the same machine. Release deletes the lease, conditioned on it still being ours.
"""
import dataclasses
import datetime
import json
import os
import pathlib
import socket
import threading
import time
import uuid
from typing import Any

from absl import logging

from lrr_jax import files

LEASE_FILE = "lease.json"
DEFAULT_STALE_SECONDS = 300.0


class WorkdirInUse(RuntimeError):
  """Another live process holds the workdir's lease."""


def _boot_id() -> str:
  try:
    return pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()
  except OSError:
    return ""


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lease: host, pid, start time (ISO, UTC), last renewal (seconds since the epoch), a token."""
  host: str
  pid: int
  started: str
  renewed: float
  token: str
  boot_id: str = ""

  @classmethod
  def me(cls) -> "Holder":
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return cls(socket.gethostname(), os.getpid(), now, time.time(), uuid.uuid4().hex, _boot_id())

  def describe(self) -> str:
    return (f"host {self.host}, pid {self.pid}, started at {self.started}, last renewed "
            f"{max(0.0, time.time() - self.renewed):.0f} s ago")

  def is_dead_here(self) -> bool:
    """Whether the holder was a process of this machine (same host and boot) that no longer exists."""
    if self.host != socket.gethostname() or not self.boot_id or self.boot_id != _boot_id():
      return False
    try:
      os.kill(self.pid, 0)
    except ProcessLookupError:
      return True
    except PermissionError:  # alive, another user's
      return False
    return False

  def to_bytes(self) -> bytes:
    return json.dumps(dataclasses.asdict(self)).encode()

  @classmethod
  def from_bytes(cls, data: bytes, path: Any) -> "Holder":
    try:
      fields = json.loads(data.decode("utf-8"))
      return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields})
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as e:  # a cut or foreign file: a dead holder
      logging.warning("Lease %s is unreadable (%s); treating it as stale.", path, e)
      return cls("?", -1, "?", 0.0, "")


class _LocalStore:
  """The lease file on local disk; its version is its bytes."""

  def __init__(self, path: pathlib.Path):
    self.path = path

  def read(self) -> tuple[bytes, bytes] | None:
    try:
      data = self.path.read_bytes()
    except FileNotFoundError:
      return None
    return data, data

  def create(self, data: bytes) -> bytes:
    """Raises FileExistsError if a lease exists."""
    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    return data

  def replace(self, data: bytes, version: bytes) -> bytes:
    """Write `data` if the lease is still `version` (FileExistsError if not): a stale one is moved to a name of
    our own first, so of two takers only one moves the lease they both judged."""
    moved = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}")
    try:
      os.rename(self.path, moved)
    except FileNotFoundError as e:
      raise FileExistsError(self.path) from e
    try:
      if moved.read_bytes() != version:  # another taker replaced it meanwhile: put theirs back
        try:
          os.link(moved, self.path)
        except FileExistsError:
          pass
        raise FileExistsError(self.path)
      return self.create(data)
    finally:
      moved.unlink(missing_ok=True)

  def renew(self, data: bytes, version: bytes) -> bytes:
    """Overwrite our own lease (atomically: a temp file renamed), if it is still `version`."""
    current = self.read()
    if current is None or current[1] != version:
      raise FileExistsError(self.path)
    temp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
    temp.write_bytes(data)
    os.replace(temp, self.path)
    return data

  def delete(self, version: bytes) -> None:
    current = self.read()
    if current is not None and current[1] == version:
      self.path.unlink(missing_ok=True)


class _GcsStore:
  """The lease object on GCS; its version is its generation, and every write is conditioned on it."""

  def __init__(self, path: str):
    import gcsfs  # pylint: disable=g-import-not-at-top
    self.fs = gcsfs.GCSFileSystem()
    self.path = path
    self.bucket, self.key, _ = self.fs.split_path(path)

  def read(self) -> tuple[bytes, str] | None:
    """(bytes, generation), read again if the object changed while it was read."""
    while True:
      try:
        generation = self._generation()
        data = self.fs.cat_file(self.path)
        if self._generation() == generation:
          return data, generation
      except FileNotFoundError:
        return None

  def _generation(self) -> str:
    self.fs.invalidate_cache(self.path)
    return str(self.fs.info(self.path)["generation"])

  def _upload(self, data: bytes, if_generation_match: str) -> str:
    """One multipart upload conditioned on the object's generation (0: absent); raises FileExistsError (HTTP
    412) when it differs. (The emulator honours the condition on multipart uploads, not on media ones.)"""
    body = (b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n" + json.dumps({"name": self.key}).encode()
            + b"\n--==0==\nContent-Type: application/json\n\n" + data + b"\n--==0==--")
    location = self.fs._location  # pylint: disable=protected-access
    out = self.fs.call("POST", f"{location}/upload/storage/v1/b/{self.bucket}/o",
                       uploadType="multipart", ifGenerationMatch=if_generation_match, data=body,
                       headers={"Content-Type": 'multipart/related; boundary="==0=="'}, json_out=True)
    self.fs.invalidate_cache(self.path)
    return str(out["generation"])

  def create(self, data: bytes) -> str:
    return self._upload(data, "0")

  def replace(self, data: bytes, version: str) -> str:
    return self._upload(data, version)

  renew = replace

  def delete(self, version: str) -> None:
    try:
      self.fs.call("DELETE", "b/{}/o/{}", self.bucket, self.key, ifGenerationMatch=version)
    except (FileNotFoundError, FileExistsError):  # gone, or no longer ours
      pass
    self.fs.invalidate_cache(self.path)


class Lease:
  """The lease of `workdir`: `acquire()` (or `with Lease(...)`) claims it and renews it in a thread until
  `release()`.

  Raises (from acquire):
    WorkdirInUse: a live holder has it; the message names the workdir and the holder.
    NotADirectoryError: `workdir` is a file.
  """

  def __init__(self, workdir: files.PathLike, stale_after: float = DEFAULT_STALE_SECONDS):
    if stale_after <= 0:
      raise ValueError(f"The lease's staleness must be > 0 seconds; got {stale_after}.")
    self.workdir = files.as_path(workdir)
    self.path = self.workdir / LEASE_FILE
    self.stale_after = stale_after
    self.holder = Holder.me()
    self._store = _GcsStore(str(self.path)) if files.is_remote(self.path) else _LocalStore(pathlib.Path(self.path))
    self._version = None
    self._stop = threading.Event()
    self._thread = None

  def acquire(self) -> "Lease":
    if self.workdir.is_file():
      raise NotADirectoryError(f"The workdir {self.workdir} is a file, not a directory.")
    self.workdir.mkdir(parents=True, exist_ok=True)
    data = self.holder.to_bytes()
    try:
      self._version = self._store.create(data)
    except FileExistsError:
      self._version = self._take_over(data)
    self._thread = threading.Thread(target=self._renew_until_stopped, name=f"lease {self.path}", daemon=True)
    self._thread.start()
    return self

  def _take_over(self, data: bytes) -> Any:
    """Replace a stale lease with ours (its version), or raise WorkdirInUse naming its live holder."""
    found = self._store.read()
    if found is None:  # released meanwhile
      return self._store.create(data)
    holder = Holder.from_bytes(found[0], self.path)
    stale = time.time() - holder.renewed > self.stale_after
    if not (stale or holder.is_dead_here()):
      raise WorkdirInUse(self._refusal(holder))
    logging.warning("Taking over the workdir lease %s from a %s holder (%s).", self.path,
                    "stale" if stale else "dead", holder.describe())
    try:
      return self._store.replace(data, found[1])
    except FileExistsError:  # another process took it over first
      again = self._store.read()
      raise WorkdirInUse(self._refusal(Holder.from_bytes(again[0], self.path) if again else holder)) from None

  def _refusal(self, holder: Holder) -> str:
    return (f"The workdir {self.workdir} is in use by another run ({holder.describe()}); its lease is "
            f"{self.path}. One run per workdir: wait for it to end, or use another workdir. A lease not "
            f"renewed for {self.stale_after:.0f} s is taken over.")

  def renew(self) -> None:
    """Write a fresh renewal time (raises FileExistsError if the lease is no longer ours)."""
    self.holder = dataclasses.replace(self.holder, renewed=time.time())
    self._version = self._store.renew(self.holder.to_bytes(), self._version)

  def _renew_until_stopped(self) -> None:
    while not self._stop.wait(self.stale_after / 4):
      try:
        self.renew()
      except FileExistsError:
        logging.error("Lost the workdir lease %s: another process took it over.", self.path)
        return
      except Exception as e:  # pylint: disable=broad-except  # a passing outage: try again next time
        logging.warning("Could not renew the workdir lease %s: %s", self.path, e)

  def release(self) -> None:
    """Stop renewing and delete the lease if it is still ours."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._version is not None:
      self._store.delete(self._version)
      self._version = None

  def __enter__(self) -> "Lease":
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()
