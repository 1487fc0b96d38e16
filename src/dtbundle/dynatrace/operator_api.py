"""What each Dynatrace Operator minor accepts in a DynaKube: the apiVersion to write, which
features and templates that apiVersion has, and how a template image can be pinned by digest.

Read from the Operator's CRDs (``config/crd/bases/dynatrace.com_dynakubes.yaml`` at v1.4.2 …
v1.10.2, vendored in ``tests/data/dynatrace-crds/`` and checked by ``tests/test_dynakube_crds.py``)
and its controllers:

* apiVersion: the newest one the minor serves (1.4 v1beta3, 1.5 v1beta4, 1.6-1.7 v1beta5, 1.8+ v1beta6);
* ``templates.*.imageRef.digest`` exists from 1.10; before, the reference is ``repository:tag``,
  so ``tag: <tag>@<digest>`` pins the image, except where the Operator copies ``imageRef.tag``
  into the ``app.kubernetes.io/version`` label (``@``/``:`` are invalid there): the SQL extension
  executor from 1.8 (``extension/databases/deployment.go``) and the EEC from 1.9
  (``extension/eec/statefulset.go``);
* EdgeConnect: ``dynatrace.com/v1alpha2`` in every minor, ``imageRef.digest`` from 1.10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from dtbundle.errors import UsageError

OLDEST, NEWEST = (1, 4), (1, 10)
SUPPORTED = f"{OLDEST[0]}.{OLDEST[1]} to {NEWEST[0]}.{NEWEST[1]}"
EDGECONNECT_API_VERSION = "dynatrace.com/v1alpha2"


@dataclass(frozen=True)
class OperatorApi:
    """The DynaKube layout one Operator minor serves (see the module docstring)."""

    version: str  # as found in the bundle, e.g. "v1.10.2"
    minor: int  # 1.<minor>

    @property
    def api_version(self) -> str:
        beta = {4: 3, 5: 4, 6: 5, 7: 5}.get(self.minor, 6)
        return f"dynatrace.com/v1beta{beta}"

    @property
    def digest_field(self) -> bool:
        """``imageRef.digest`` exists (DynaKube templates and EdgeConnect)."""
        return self.minor >= 10

    @property
    def otel_template(self) -> str:
        return "openTelemetryCollector" if self.minor < 5 else "otelCollector"

    @property
    def telemetry_ingest(self) -> bool:
        return self.minor >= 5

    @property
    def kspm_host_paths(self) -> bool:
        """``kspm.mappedHostPaths`` (v1beta5+)."""
        return self.minor >= 6

    @property
    def structured_extensions(self) -> bool:
        """v1beta6: ``extensions.prometheus`` / ``extensions.databases[]`` and ``templates.sqlExtensionExecutor``."""
        return self.minor >= 8

    def tag_in_label(self, template: str) -> bool:
        """Whether this Operator copies ``templates.<template>.imageRef.tag`` into a label."""
        if self.digest_field:
            return False  # the digest has its own field; the tag stays plain
        return (template == "sqlExtensionExecutor" and self.minor >= 8) or (
            template == "extensionExecutionController" and self.minor >= 9
        )


def operator_api(version: str) -> OperatorApi:
    """The layout for an Operator version such as ``v1.10.2`` (``-fips`` and other suffixes allowed);
    UsageError outside the supported range."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+][\w.-]*)?", version.strip())
    if not match:
        raise UsageError(
            f"Dynatrace Operator version {version!r} in the bundle is not a version dtbundle knows: "
            f"DynaKube output supports Operator {SUPPORTED}"
        )
    found = (int(match.group(1)), int(match.group(2)))
    if not OLDEST <= found <= NEWEST:
        raise UsageError(
            f"Dynatrace Operator {version} in the bundle: DynaKube output supports Operator {SUPPORTED} "
            "(export the Operator with --version operator=v1.X.Y in that range)"
        )
    return OperatorApi(version.strip(), found[1])


NEWEST_API = OperatorApi(f"v{NEWEST[0]}.{NEWEST[1]}", NEWEST[1])

# Options that an Operator minor cannot express, with the first minor that can.
OPTION_SINCE = {"telemetry-ingest": 5, "database-extensions": 8}


def check_options(api: OperatorApi, options: set[str]) -> None:
    for option, minor in sorted(OPTION_SINCE.items()):
        if option in options and api.minor < minor:
            raise UsageError(
                f"option {option} needs Dynatrace Operator 1.{minor} or newer; the bundle has Operator {api.version}: "
                f"export it with --version operator=v1.{minor}.0 or newer"
            )


def api_url(environment_url: str, api: OperatorApi) -> str:
    """``spec.apiUrl`` for an environment URL: SaaS ``https://<id>.live.dynatrace.com`` or Managed
    ``https://<domain>/e/<id>``, with ``/api`` appended (the Operator's webhook demands it)."""
    text = environment_url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(
            f"--environment-url {environment_url!r}: give the environment URL, "
            "e.g. https://abc12345.live.dynatrace.com or https://dynatrace.example.com/e/<environment-id>"
        )
    third_gen = ".apps." in parts.hostname
    if third_gen and not api.digest_field:
        raise UsageError(
            f"--environment-url {environment_url!r}: Dynatrace Operator {api.version} rejects platform (.apps.) URLs; "
            "use https://<environment-id>.live.dynatrace.com"
        )
    url = text if text.endswith("/api") else f"{text}/api"
    if "ENVIRONMENTID" in url:
        raise UsageError(f"--environment-url {environment_url!r} is the documentation's example: give your environment")
    if len(url) > 128:
        raise UsageError(f"--environment-url: the API URL {url} is longer than the DynaKube's 128 characters")
    return url
