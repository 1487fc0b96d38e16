"""Who is trusted to sign, and what verification concluded: the identity policy for keyless
signatures, the whole verification policy (keys, trusted root, identities), and the verdict
every verification returns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from dtbundle.trust.keys import VerifyKey
from dtbundle.trust.root import TrustedRoot


@dataclass(frozen=True)
class Identity:
    """Who may have signed keylessly: certificate identity and OIDC issuer (exact or regexp)."""

    subject: str | None = None
    subject_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None

    def matches(self, subjects: Sequence[str], issuer: str | None) -> bool:
        ok_subject = any(
            (self.subject is None or s == self.subject)
            and (self.subject_regexp is None or re.fullmatch(self.subject_regexp, s) is not None)
            for s in subjects
        )
        ok_issuer = (self.issuer is None or issuer == self.issuer) and (
            self.issuer_regexp is None or (issuer is not None and re.fullmatch(self.issuer_regexp, issuer) is not None)
        )
        return ok_subject and ok_issuer


@dataclass(frozen=True)
class Policy:
    """What a signature must verify against: trusted keys, and/or a trusted root with identities."""

    keys: tuple[VerifyKey, ...] = ()
    trusted_root: TrustedRoot | None = None
    identities: tuple[Identity, ...] = ()
    # Keyless without a trusted root of the user's: export fetches one through TUF, verify and
    # import use the one the bundle carries (dtbundle.verify.with_carried_root).
    root_pending: bool = False

    @property
    def empty(self) -> bool:
        # A trusted root alone trusts nobody: keyless signatures also need an identity.
        return not self.keys and not ((self.trusted_root or self.root_pending) and self.identities)

    def with_root(self, root: TrustedRoot) -> Policy:
        return replace(self, trusted_root=root, root_pending=False)


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one signature."""

    valid: bool
    kind: str  # "cosign" or "sigstore-bundle"
    detail: str  # what was verified, or why it failed
    signer: str | None = None  # "key sha256:…" or the certificate identity
    claimed: str | None = None  # the image digest the signature claims

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "kind": self.kind,
            "signer": self.signer,
            "detail": self.detail,
            "claimedDigest": self.claimed,
        }
