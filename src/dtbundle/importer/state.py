"""Rollback protection for ``import``: the newest bundle creation time imported per target tag.

An older, validly signed bundle imported with ``--overwrite`` would move tags back to older
images (a replay, as TUF calls it). So import records, for every tag it writes, the newest
catalog creation time (``created``, under the catalog signature) it imported there, and
refuses a bundle created earlier than a recorded time of any of its tags, unless
``--allow-downgrade``. An equal time (the same bundle again) is allowed.

- A record is per *target*: the target registry host and ``repository:tag`` (what a tag
  rollback moves), or ``oci:<absolute directory>`` and the image's ref name for an OCI
  layout. The same bundle imported into two registries has two records; an image pinned by
  digest only moves no tag and is not recorded.
- Only a bundle whose catalog signature verified raises a record: an unauthenticated time
  (``--insecure-skip-verify``) is still checked but never recorded, since a forged time
  far in the future would otherwise block every later genuine bundle.
- The pure part (:func:`check`, :func:`record`, :func:`refusal`) decides; the IO part
  loads (bounded; a corrupt or unreadable file is an error, never an empty state, since
  that would switch the protection off), saves atomically (temporary file, fsync,
  ``os.replace``, mode 0600) and locks (``flock`` on ``<file>.lock``) around the final
  re-read, re-check, publish and write, so concurrent imports neither lose a record nor
  publish an older bundle after a newer one finished.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtbundle import jsontext
from dtbundle.bundle.format import format_time, parse_time
from dtbundle.errors import CatalogError, RollbackError, StateFileError
from dtbundle.limits import STATE_FILE_MAX_BYTES
from dtbundle.oci import Reference

STATE_VERSION = 1
_LAYOUT = "oci:"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# -- the pure part --------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Target:
    """One mutable name an import writes: where (a registry host, or ``oci:<dir>``) and which name."""

    location: str  # "reg.corp:5000", or "oci:/abs/layout"
    name: str  # "dynatrace/dynatrace-operator:v1.4.0", or the image's ref name in the layout

    def __str__(self) -> str:
        layout = self.location.startswith(_LAYOUT)
        where = f"the OCI layout {self.location[len(_LAYOUT) :]}" if layout else self.location
        return f"{where} for {self.name}"


def registry_targets(references: Iterable[Reference]) -> frozenset[Target]:
    """The targets of the image tags an import writes to registries (untagged ones move nothing)."""
    return frozenset(Target(r.registry, f"{r.repository}:{r.tag}") for r in references if r.tag)


def layout_targets(directory: Path, ref_names: Iterable[str]) -> frozenset[Target]:
    """The targets of an OCI layout import: the directory's absolute path and each image's ref name."""
    location = _LAYOUT + str(directory.expanduser().resolve())
    return frozenset(Target(location, name) for name in ref_names)


def bundle_created(text: str) -> datetime.datetime:
    """The catalog's creation time (validated when the catalog was parsed)."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise CatalogError(f"bundle catalog is invalid: created {exc}, so its age cannot be checked") from None


@dataclass(frozen=True)
class ImportState:
    """The newest bundle creation time imported, per target."""

    records: Mapping[Target, datetime.datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Downgrade:
    """A target whose recorded bundle is newer than the one being imported."""

    target: Target
    recorded: datetime.datetime


def check(state: ImportState, created: datetime.datetime, targets: Iterable[Target]) -> list[Downgrade]:
    """Every target of ``targets`` that recorded a bundle newer than ``created`` (equal is fine), sorted."""
    found = [Downgrade(t, state.records[t]) for t in sorted(set(targets)) if t in state.records]
    return [d for d in found if d.recorded > created]


def record(state: ImportState, created: datetime.datetime, targets: Iterable[Target]) -> ImportState:
    """``state`` with ``created`` recorded for ``targets``; a newer recorded time stays (the floor never drops)."""
    records = dict(state.records)
    for target in targets:
        records[target] = max(records.get(target, created), created)
    return ImportState(records)


def refusal(created: datetime.datetime, downgrades: list[Downgrade], state_file: Path | None = None) -> RollbackError:
    """The error naming the bundle's time, the newer recorded time and the images concerned."""
    newest = max(d.recorded for d in downgrades)
    first = downgrades[0]
    others = len(downgrades) - 1
    more = f" (and {others} more image{'s' if others > 1 else ''}, newest {format_time(newest)})" if others else ""
    where = f" (recorded in {state_file})" if state_file is not None else ""
    return RollbackError(
        f"bundle created {format_time(created)} is older than the one imported to {first.target} "
        f"({format_time(first.recorded)}){more}{where}: importing it would roll tags back to older images; "
        "pass --allow-downgrade to import it anyway"
    )


def to_json(state: ImportState) -> dict[str, Any]:
    targets: dict[str, dict[str, str]] = {}
    for target, when in sorted(state.records.items()):
        targets.setdefault(target.location, {})[target.name] = format_time(when)
    return {"version": STATE_VERSION, "targets": targets}


def from_json(obj: Any) -> ImportState:
    """Parse the state document; ValueError naming the first problem."""
    if not isinstance(obj, dict) or obj.get("version") != STATE_VERSION:
        raise ValueError(f"it is not a version {STATE_VERSION} dtbundle import state")
    targets = obj.get("targets")
    if not isinstance(targets, dict):
        raise ValueError("'targets' is not an object")
    records: dict[Target, datetime.datetime] = {}
    for location, names in targets.items():
        if not isinstance(names, dict):
            raise ValueError(f"the records of {location[:80]!r} are not an object")
        for name, when in names.items():
            if _CONTROL.search(location + name):  # they end up in messages on a terminal
                raise ValueError(f"the record {location[:80]!r} {name[:80]!r} holds control characters")
            if not isinstance(when, str):
                raise ValueError(f"the time of {location[:80]!r} {name[:80]!r} is not a string")
            records[Target(location, name)] = parse_time(when)
    return ImportState(records)


# -- the IO part ----------------------------------------------------------------------------------------
def default_state_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/dtbundle/imports.json``, or ``~/.local/state/dtbundle/imports.json``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return root / "dtbundle" / "imports.json"


def _corrupt(path: Path, why: str) -> StateFileError:
    return StateFileError(
        f"the import state file {path} is unusable ({why}); it holds the newest bundle time imported per "
        "target tag, and import refuses to run without it: restore it from a backup, or, to start over "
        "(forgetting every record: the next import to each target accepts a bundle of any age), move it away, "
        "or choose another with --state-file"
    )


def load_state(path: Path) -> ImportState:
    """The recorded state (empty when ``path`` does not exist); StateFileError when it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # NONBLOCK: a FIFO must not hang us
    except FileNotFoundError:
        return ImportState()
    except OSError as exc:
        raise _corrupt(path, f"cannot read it: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise _corrupt(path, "not a regular file")
            data = handle.read(STATE_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise _corrupt(path, f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > STATE_FILE_MAX_BYTES:
        raise _corrupt(path, f"larger than {STATE_FILE_MAX_BYTES} bytes")
    try:
        return from_json(jsontext.loads(data))
    except UnicodeError:
        raise _corrupt(path, "corrupt: not UTF-8") from None
    except ValueError as exc:  # not JSON, nested too deeply, or not our document
        raise _corrupt(path, f"corrupt: {str(exc)[:200]}") from None


def save_state(path: Path, state: ImportState) -> None:
    """Write ``state`` atomically: a temporary file beside ``path`` (0600), fsync, rename, fsync the directory."""
    data = (json.dumps(to_json(state), indent=1, ensure_ascii=True, sort_keys=True) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)
    except OSError as exc:
        raise StateFileError(f"cannot write the import state file {path}: {exc.strerror or exc}") from None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    """Open (creating it and its directory) ``<path>.lock``, 0600."""
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateFileError(f"cannot create the import state lock {lock}: {exc.strerror or exc}") from None


@contextmanager
def locked(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock``; ``waiting`` is called when another process holds it."""
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# -- the guard an import uses -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RollbackGuard:
    """One import's rollback check: early (before a byte moves) and again, locked, around publishing.

    ``record``: whether a successful publish records ``created`` (a verified catalog, not a dry run).
    """

    path: Path
    created: datetime.datetime
    targets: frozenset[Target]
    allow_downgrade: bool = False
    record: bool = True

    def check(self) -> None:
        """Refuse a downgrade before anything is pushed; fail early when the state cannot be written."""
        state = load_state(self.path)
        self._refuse_downgrade(state)
        if self.record:  # a state that cannot be written would fail only after the tags moved
            os.close(_open_lock(self.path))
            if not os.access(self.path.parent, os.W_OK | os.X_OK):
                raise StateFileError(f"cannot write the import state file {self.path}: its directory is not writable")

    @contextmanager
    def publishing(self, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Around the commit: lock, re-read and re-check (another import may have finished meanwhile),
        publish, then record. Nothing is recorded when the commit fails."""
        if not self.record:
            self._refuse_downgrade(load_state(self.path))
            yield
            return
        with locked(self.path, waiting):
            state = load_state(self.path)
            self._refuse_downgrade(state)
            yield
            try:
                save_state(self.path, record(state, self.created, self.targets))
            except StateFileError as exc:
                raise StateFileError(
                    f"the import finished, but recording it failed: {exc}; run the same command again once the "
                    "file is writable (it pushes nothing new and records the import)"
                ) from None

    def _refuse_downgrade(self, state: ImportState) -> None:
        if self.allow_downgrade:
            return
        downgrades = check(state, self.created, self.targets)
        if downgrades:
            raise refusal(self.created, downgrades, self.path)
