"""Sigstore's ``trusted_root.json``, obtained through TUF on the internet side (``export``).

python-tuf's ngclient does the work: starting from a trusted TUF root (``--tuf-root``, else
the public-good root shipped beside this module, ``public_good_root.json``, see
``public_good_root.md``), it walks root rotations, checks timestamp, snapshot and targets
metadata (signatures, versions, expiry against now) and downloads the ``trusted_root.json``
target verified by its length and hashes. Metadata and targets are cached under
``$XDG_CACHE_HOME/dtbundle/tuf`` (one directory per repository URL and first root), so a
later run starts from the newest root it has seen. Network access goes through python-tuf's
default (urllib3) fetcher, which honours HTTPS_PROXY/NO_PROXY. The air-gapped side never
runs TUF (its metadata expires within days); it uses the trusted root the bundle carries.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from dtbundle.errors import IntegrityError, LocalIOError, OperationalError
from dtbundle.trust import DEFAULT_TUF_URL
from dtbundle.trust.policy import Policy
from dtbundle.trust.root import TrustedRoot

TRUSTED_ROOT_TARGET = "trusted_root.json"


@dataclass(frozen=True)
class TufSource:
    """Where to get the trusted root: a TUF repository and the TUF root to trust first."""

    url: str = DEFAULT_TUF_URL
    root: Path | None = None  # bootstrap root.json; None: the shipped public-good root
    cache: Path | None = None  # None: $XDG_CACHE_HOME/dtbundle/tuf (or ~/.cache/…)


def embedded_root() -> bytes:
    """The public-good TUF root shipped with dtbundle (from sigstore-python 4.5.1)."""
    return resources.files("dtbundle.trust").joinpath("public_good_root.json").read_bytes()


def cache_base() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dtbundle" / "tuf"


def with_tuf_root(policy: Policy, source: TufSource, phase: Callable[[str], None] = lambda _: None) -> Policy:
    """``policy`` with a trusted root: its own, or (keyless without one) the one TUF gives."""
    if not policy.root_pending:
        return policy
    phase(f"fetching Sigstore's trusted root from {source.url} (TUF)")
    return policy.with_root(TrustedRoot.from_json(fetch_trusted_root(source), f"{TRUSTED_ROOT_TARGET} from TUF"))


def fetch_trusted_root(source: TufSource) -> bytes:
    """The ``trusted_root.json`` target of ``source``, verified by the TUF client.

    Raises IntegrityError when metadata or the target do not verify (bad signature, expired,
    rolled back, hash or length mismatch), OperationalError when the repository cannot be
    reached, LocalIOError for the cache or the ``--tuf-root`` file.
    """
    from tuf.api import exceptions as tuf_errors  # imported here: only export with keyless needs it
    from tuf.ngclient.updater import Updater

    try:
        bootstrap = source.root.read_bytes() if source.root is not None else embedded_root()
    except OSError as exc:
        raise LocalIOError(f"cannot read the TUF root {source.root}: {exc.strerror or exc}") from None
    url = source.url.rstrip("/")
    # One cache per repository and first root: a different --tuf-root never meets another's state.
    first = hashlib.sha256(bootstrap).hexdigest()[:16]
    base = (source.cache or cache_base()) / quote(url, safe="") / first
    metadata_dir, target_dir = base / "metadata", base / "targets"
    try:
        metadata_dir.mkdir(parents=True, exist_ok=True)
        target_dir.mkdir(parents=True, exist_ok=True)
        cached = (metadata_dir / "root.json").is_file()
    except OSError as exc:
        raise LocalIOError(f"cannot use the TUF cache {base}: {exc.strerror or exc}") from None
    where = f"the TUF repository {url}"
    step = "metadata"
    try:
        updater = Updater(
            str(metadata_dir),
            url + "/",
            str(target_dir),
            url + "/targets/",
            bootstrap=None if cached else bootstrap,  # the cached root is newer (or the same)
        )
        updater.refresh()
        info = updater.get_targetinfo(TRUSTED_ROOT_TARGET)
        if info is None:
            raise IntegrityError(f"{where} lists no {TRUSTED_ROOT_TARGET}")
        step = f"target {TRUSTED_ROOT_TARGET}"
        path = updater.find_cached_target(info) or updater.download_target(info)
        return Path(path).read_bytes()
    except tuf_errors.ExpiredMetadataError as exc:
        raise IntegrityError(
            f"{where}: expired metadata ({exc}); if the first TUF root is too old to reach the current one, "
            "pass --tuf-root with a newer root.json, or --trusted-root FILE"
        ) from None
    except tuf_errors.RepositoryError as exc:
        raise IntegrityError(f"{where}: its {step} failed TUF verification: {exc}") from None
    except tuf_errors.DownloadError as exc:
        raise OperationalError(f"cannot download the {step} of {where}: {exc}") from None
    except OSError as exc:
        raise LocalIOError(f"TUF cache {base}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a malformed --tuf-root (python-tuf raises DeserializationError, a ValueError)
        raise IntegrityError(f"{where}: unusable TUF metadata: {exc}") from None
