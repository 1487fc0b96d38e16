"""The Dynatrace Deployment API: which OneAgent versions an environment offers, and the latest.

Requests go through :class:`dtbundle.registry.service.ServiceSession`, so they get the
registry layer's TLS settings, timeouts, bounded retries and bounded JSON bodies. The API
token travels only in the ``Authorization`` header; no message names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dtbundle.dynatrace.selection import Environment
from dtbundle.errors import DynatraceApiError, DynatraceAuthError, RegistryProtocolError
from dtbundle.registry.service import ServiceSession

_AGENT_PATH = "/api/v1/deployment/installer/agent"


@dataclass(frozen=True)
class AgentVersions:
    """The OneAgent versions an environment offers (oldest first, as the API lists them) and its latest."""

    versions: tuple[str, ...]
    latest: str | None


def oneagent_versions(environment_url: str, api_token: str, session: ServiceSession) -> AgentVersions:
    """OneAgent versions (unix, default installer) and the latest, from the Deployment API.

    ``session`` carries the network settings (e.g. ``ServiceSession(RegistryConfig(ca_cert=...))``).
    DynatraceAuthError when the token is refused, DynatraceApiError for any other unusable answer.
    """
    base = Environment.parse(environment_url).url + _AGENT_PATH
    headers = {"Authorization": f"Api-Token {api_token}", "Accept": "application/json"}
    listing = _get(session, f"{base}/versions/unix/default", headers, environment_url)
    latest = _get(session, f"{base}/unix/default/latest/metainfo", headers, environment_url)
    available = listing.get("availableVersions")
    if not isinstance(available, list) or not all(isinstance(v, str) for v in available):
        raise DynatraceApiError(f"{environment_url} answered the versions request without 'availableVersions'")
    newest = latest.get("latestAgentVersion")
    return AgentVersions(tuple(available), newest if isinstance(newest, str) else None)


def _get(session: ServiceSession, url: str, headers: dict[str, str], environment_url: str) -> dict[str, Any]:
    path = urlsplit(url).path
    try:
        answer = session.get_json(url, headers, f"the Deployment API answer for {path}")
    except RegistryProtocolError:
        raise DynatraceApiError(f"{environment_url} answered with something that is not a JSON object") from None
    if answer.status in (401, 403):
        raise DynatraceAuthError(
            f"{environment_url} refused the API token (HTTP {answer.status}); it needs the "
            "'PaaS integration - Installer download' (InstallerDownload) scope"
        )
    if answer.body is None:
        raise DynatraceApiError(f"{environment_url} answered HTTP {answer.status} for {path}")
    return answer.body
