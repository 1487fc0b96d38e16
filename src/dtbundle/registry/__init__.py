"""A synchronous OCI distribution client (httpx based).

Public API: :class:`RegistryClient`, :class:`RegistryConfig`, :class:`CredentialResolver`,
:class:`Credentials`, :class:`ProxySettings`, and the value types :class:`Manifest`, :class:`Referrers`,
:class:`PutResult`. Nothing from httpx escapes this package: failures are
:mod:`dtbundle.errors` classes.
"""

from dtbundle.registry.client import RegistryClient
from dtbundle.registry.config import RegistryConfig
from dtbundle.registry.credentials import CredentialResolver, Credentials
from dtbundle.registry.proxy import ProxySettings
from dtbundle.registry.values import Manifest, PutResult, Referrers

__all__ = [
    "CredentialResolver",
    "Credentials",
    "Manifest",
    "ProxySettings",
    "PutResult",
    "Referrers",
    "RegistryClient",
    "RegistryConfig",
]
