"""The one error hierarchy of dtbundle.

Every error a user can see is a :class:`DtbundleError`. Its ``str()`` is the
one-line message shown to the user (what went wrong and what to do), and its
``exit_code`` is what the CLI exits with. The CLI catches ``DtbundleError``
once and prints the message; anything else is a bug and is reported as such.
Nothing from httpx, zstandard or cryptography escapes the library: it is
translated at the boundary into one of these classes.

    DtbundleError
    ├── UsageError                      exit 2  bad options or input from the user
    │   ├── InvalidReferenceError               an image reference does not parse
    │   ├── CredentialsConfigError              a credentials file or helper is unusable
    │   ├── TagConflictError                    a target tag exists with another digest
    │   ├── MissingBlobsError                   a delta bundle needs blobs the target does not hold
    │   ├── VolumeSetError                      volumes of different sets, or one given twice
    │   └── ReferenceNotFoundError              a requested tag, digest or repository does not
    │                                           exist (names the nearest tags)
    ├── OperationalError                exit 1  network, registry or disk failed
    │   ├── RegistryError                       the registry answered, but not as hoped
    │   │   ├── AuthenticationError             401/403: which registry refused which source
    │   │   ├── NotFoundError                   404: names the reference
    │   │   ├── UnsupportedManifestError        schema1 or an unknown manifest type
    │   │   └── RegistryProtocolError           an answer that breaks the distribution spec
    │   ├── RegistryConnectionError             could not connect / TLS / timeout, after retries
    │   │   ├── TransferStalledError            too few bytes within the stall window (retried, resumed)
    │   │   └── TransferDeadlineError           a transfer outlived its overall deadline
    │   ├── DynatraceApiError                   the Dynatrace Deployment API answered, but not as hoped
    │   │   └── DynatraceAuthError              it refused the API token
    │   └── LocalIOError                        reading or writing a local file failed
    │       └── StateFileError                  the import state file (rollback records) is unusable
    ├── IntegrityError                  exit 3  verification or integrity failure
    │   ├── DigestMismatchError                 content does not match its digest or size
    │   ├── LimitExceededError                  content larger than a configured bound
    │   ├── CatalogError                        a bundle catalog that breaks the format
    │   ├── SignatureError                      one image signature failed one check (the
    │   │                                       trust module turns it into a verdict)
    │   ├── PolicyError                         images lack a valid signature under the policy
    │   └── RollbackError                       a bundle older than one already imported to a target
    └── Interrupted                     exit 130  Ctrl-C or SIGTERM; says what state things were left in
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_OPERATIONAL = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class DtbundleError(Exception):
    """Root of every error dtbundle reports to a user."""

    exit_code: int = EXIT_OPERATIONAL

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints exactly this.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(DtbundleError):
    """The user asked for something that cannot work as given."""

    exit_code = EXIT_USAGE


class InvalidReferenceError(UsageError):
    """An image reference does not follow the reference grammar."""


class CredentialsConfigError(UsageError):
    """A credentials file or credential helper could not be used."""


class OperationalError(DtbundleError):
    """Network, registry or local disk failure; retrying later may help."""

    exit_code = EXIT_OPERATIONAL


class RegistryError(OperationalError):
    """The registry answered with an error or an unusable response."""


class AuthenticationError(RegistryError):
    """The registry refused the credentials (or their absence)."""


class NotFoundError(RegistryError):
    """The named manifest, blob or repository does not exist."""


class UnsupportedManifestError(RegistryError):
    """A manifest of a type dtbundle cannot carry byte for byte (e.g. schema1)."""


class RegistryProtocolError(RegistryError):
    """The registry's answer violates the distribution spec."""


class RegistryConnectionError(OperationalError):
    """The registry could not be reached (DNS, TCP, TLS, timeout), even after retries."""


class TransferStalledError(RegistryConnectionError):
    """A transfer moved too few bytes within the stall window; retried or resumed like a drop."""


class TransferDeadlineError(RegistryConnectionError):
    """A transfer, with all its retries and resumes, did not finish within its deadline."""


class LocalIOError(OperationalError):
    """A local file could not be read or written."""


class IntegrityError(DtbundleError):
    """Content failed verification: never trust it, never push it."""

    exit_code = EXIT_INTEGRITY


class DigestMismatchError(IntegrityError):
    """Content does not match the digest or size it was promised to have."""


class LimitExceededError(IntegrityError):
    """Content exceeds a configured bound (hostile or corrupt input)."""


class TagConflictError(UsageError):
    """A target tag exists with another digest (tags are treated as immutable)."""


class MissingBlobsError(UsageError):
    """A delta bundle leaves out blobs the target should hold, and it does not: the message names
    each missing digest and the repository it was expected in; nothing was tagged."""


class VolumeSetError(UsageError):
    """The files given are not volumes of one set (another set, a volume given twice, or several
    bundles that are not volumes)."""


class DynatraceApiError(OperationalError):
    """The Dynatrace Deployment API answered with an error or an unusable response."""


class DynatraceAuthError(DynatraceApiError):
    """The Deployment API refused the API token."""


class CatalogError(IntegrityError):
    """A bundle catalog (or its signature file) does not follow the bundle format."""


class SignatureError(IntegrityError):
    """One image signature failed one verification step; the message says which and why."""


class ReferenceNotFoundError(UsageError):
    """A reference the user asked for names a tag, digest or repository the registry does not have."""


class PolicyError(IntegrityError):
    """Images lack a valid signature under the image-signature policy (--require-signatures)."""


class Interrupted(DtbundleError):
    """The user interrupted a command (Ctrl-C, SIGTERM); the message says what state it left behind."""

    exit_code = EXIT_INTERRUPTED


class StateFileError(LocalIOError):
    """The import state file (newest bundle time per target, for rollback protection) cannot be read,
    parsed or written; import refuses to run without it rather than switch the protection off."""


class RollbackError(IntegrityError):
    """A validly signed bundle is older than one already imported to the same target tag (a replay
    would roll tags back); ``--allow-downgrade`` imports it anyway."""
