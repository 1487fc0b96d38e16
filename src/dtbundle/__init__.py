"""dtbundle: carry container images and their signatures into air-gapped registries.

The public surface is small: the CLI (``dtbundle``), the error hierarchy in
:mod:`dtbundle.errors`, image references in :mod:`dtbundle.oci.reference` and the
registry client in :mod:`dtbundle.registry`.
"""

__version__ = "0.1.0"
