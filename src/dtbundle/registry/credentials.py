"""Where registry credentials come from, in order of precedence.

1. Explicit credentials given to this command (options or environment variables),
   bound to one registry host so they are never sent anywhere else.
2. Docker's ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``):
   ``credHelpers`` for the host, then ``credsStore``, then inline ``auths``.
3. The containers (skopeo/podman) auth file: ``$REGISTRY_AUTH_FILE``, else
   ``$XDG_RUNTIME_DIR/containers/auth.json``, else ``~/.config/containers/auth.json``;
   its keys may name a repository path (``host/team``), longest match wins.

A :class:`Credentials` remembers where it came from, so an authentication error
can say which source a registry refused. Secrets are kept out of ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtbundle import jsontext
from dtbundle.errors import CredentialsConfigError
from dtbundle.limits import REGISTRY
from dtbundle.oci.reference import DOCKER_HUB, normalize_registry

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_IDENTITY_TOKEN_USER = "<token>"  # noqa: S105 - how credential helpers mark an identity token


@dataclass(frozen=True)
class Credentials:
    """A username and secret (password, or an OAuth2 identity token) and their source."""

    source: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        who = f" (user {self.username!r})" if self.username else ""
        return f"credentials from {self.source}{who}"


def _registry_of_key(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000``; Docker Hub aliases -> ``docker.io``."""
    text = key.strip()
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            text = text.split("/", 1)[0]
            break
    host, _, path = text.partition("/")
    host = normalize_registry(host)
    return f"{host}/{path}".rstrip("/") if path else host


def _decode_auth_entry(entry: Any, where: str) -> tuple[str | None, str | None, str | None]:
    """(username, password, identity_token) of one ``auths`` entry."""
    if not isinstance(entry, dict):
        raise CredentialsConfigError(f"{where} is not a JSON object; fix or remove it")
    username, password = entry.get("username"), entry.get("password")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsConfigError(
                f"{where} has an 'auth' value that is not base64 of user:password; log in again"
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialsConfigError(f"{where} 'auth' lacks the ':' between user and password")
    token = entry.get("identitytoken") or None
    return (
        str(username) if username else None,
        str(password) if password else None,
        str(token) if token else None,
    )


class CredentialResolver:
    """Looks up credentials for a registry host (and repository), caching the answers."""

    def __init__(
        self,
        explicit: Mapping[str, Credentials] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        home: Path | None = None,
        use_config_files: bool = True,
    ) -> None:
        self._explicit = {normalize_registry(k): v for k, v in (explicit or {}).items()}
        self._env = dict(os.environ if env is None else env)
        self._home = home if home is not None else Path(self._env.get("HOME") or Path.home())
        self._use_files = use_config_files
        self._cache: dict[tuple[str, str], Credentials | None] = {}
        self._lock = threading.Lock()

    # -- where to look -------------------------------------------------------------
    def docker_config_path(self) -> Path:
        base = self._env.get("DOCKER_CONFIG")
        return Path(base) / "config.json" if base else self._home / ".docker" / "config.json"

    def containers_auth_paths(self) -> list[Path]:
        if self._env.get("REGISTRY_AUTH_FILE"):
            return [Path(self._env["REGISTRY_AUTH_FILE"])]
        paths = []
        if self._env.get("XDG_RUNTIME_DIR"):
            paths.append(Path(self._env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
        paths.append(self._home / ".config" / "containers" / "auth.json")
        return paths

    def sources_checked(self) -> str:
        """A short human list of where we looked, for 'no credentials' errors."""
        places = ["explicit options"]
        if self._use_files:
            places.append(str(self.docker_config_path()))
            places.extend(str(p) for p in self.containers_auth_paths())
        return ", ".join(places)

    # -- lookup ----------------------------------------------------------------------
    def lookup(self, registry: str, repository: str = "") -> Credentials | None:
        registry = normalize_registry(registry)
        key = (registry, repository)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = self._lookup_uncached(registry, repository)
        with self._lock:
            self._cache[key] = found
        return found

    def _lookup_uncached(self, registry: str, repository: str) -> Credentials | None:
        if registry in self._explicit:
            return self._explicit[registry]
        if not self._use_files:
            return None
        docker_path = self.docker_config_path()
        found = self._from_config_file(docker_path, registry, repository, docker_style=True)
        if found:
            return found
        for path in self.containers_auth_paths():
            found = self._from_config_file(path, registry, repository, docker_style=False)
            if found:
                return found
        return None

    def _from_config_file(
        self, path: Path, registry: str, repository: str, *, docker_style: bool
    ) -> Credentials | None:
        config = _read_json_file(path)
        if config is None:
            return None
        helpers = config.get("credHelpers", {})
        helpers = {} if helpers is None else helpers
        if not isinstance(helpers, dict):
            raise CredentialsConfigError(f"{path}: 'credHelpers' must be an object")
        for key, helper in helpers.items():
            if _registry_of_key(key) == registry:
                return self._from_helper(str(helper), registry, f"{path} (credHelpers {helper!r})")
        store = config.get("credsStore")
        if store:
            found = self._from_helper(str(store), registry, f"{path} (credsStore {store!r})")
            if found:
                return found
        auths = config.get("auths", {})
        auths = {} if auths is None else auths
        if not isinstance(auths, dict):
            raise CredentialsConfigError(f"{path}: 'auths' must be an object")
        # containers auth.json keys may name a namespace; the longest matching key wins.
        wanted = f"{registry}/{repository}" if repository else registry
        best: tuple[int, str] | None = None
        for key in auths:
            scope = _registry_of_key(key)
            matches = scope == registry or (
                not docker_style and "/" in scope and (wanted + "/").startswith(scope + "/")
            )
            if matches and (best is None or len(scope) > best[0]):
                best = (len(scope), key)
        if best is None:
            return None
        username, password, token = _decode_auth_entry(auths[best[1]], f"{path} auths[{best[1]!r}]")
        if not (password or token):
            return None  # placeholder entry written by 'docker login' next to a credsStore
        return Credentials(source=str(path), username=username, password=password, identity_token=token)

    def _from_helper(self, helper: str, registry: str, source: str) -> Credentials | None:
        program = shutil.which(f"docker-credential-{helper}")
        if program is None:
            raise CredentialsConfigError(
                f"credential helper 'docker-credential-{helper}' named in {source} is not on PATH; "
                "install it or remove it from the configuration"
            )
        server = DOCKER_HUB_AUTH_KEY if registry == DOCKER_HUB else registry
        try:
            proc = subprocess.run(
                [program, "get"],
                input=server.encode(),
                capture_output=True,
                timeout=REGISTRY.credential_helper_timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CredentialsConfigError(f"credential helper {helper!r} failed to run ({type(exc).__name__})") from None
        if proc.returncode != 0:
            # Helpers answer 'credentials not found' with a non-zero exit: not an error.
            if b"not found" in proc.stdout.lower() + proc.stderr.lower():
                return None
            raise CredentialsConfigError(
                f"credential helper {helper!r} exited with status {proc.returncode} for {server}"
            )
        try:
            answer = jsontext.loads(proc.stdout)
            username, secret = answer.get("Username"), answer.get("Secret")
        except (ValueError, AttributeError):
            raise CredentialsConfigError(
                f"credential helper {helper!r} printed something that is not its JSON answer"
            ) from None
        if not secret:
            return None
        if username == _IDENTITY_TOKEN_USER:
            return Credentials(source=source, identity_token=str(secret))
        return Credentials(source=source, username=str(username or ""), password=str(secret))


def _read_json_file(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
    try:
        data = jsontext.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise CredentialsConfigError(
            f"credentials file {path} is not valid JSON (line {exc.lineno}); fix or remove it"
        ) from None
    except ValueError as exc:  # beyond the bounds of any real config (nesting, size)
        raise CredentialsConfigError(f"credentials file {path} is not usable JSON ({exc}); fix or remove it") from None
    if not isinstance(data, dict):
        raise CredentialsConfigError(f"credentials file {path} is not a JSON object")
    return data
