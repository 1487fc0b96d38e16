"""Inventories for delta bundles: what a target registry already holds (``specs/inventory.md``).

``dtbundle inventory`` runs on the air-gapped side: it records, per repository, the manifest and
blob digests the target registry holds, so the internet side can leave out what is already
there. The submodules are the homes; this package re-exports what the CLI and export use:

- :mod:`~dtbundle.inventory.model`: the document, its canonical bytes, the hostile-input parser;
- :mod:`~dtbundle.inventory.files`: reading (bounded, signature checked) and atomic writing;
- :mod:`~dtbundle.inventory.repositories`: which repositories (a bundle's targets, names, the catalog API);
- :mod:`~dtbundle.inventory.walk`: tags -> manifests -> blobs, side by side.
"""

from dtbundle.inventory.files import WrittenInventory, check_output, load_inventory, signature_path, write_inventory
from dtbundle.inventory.model import (
    FORMAT_VERSION,
    KIND,
    Inventory,
    InventoryRepository,
    make_inventory,
    parse_inventory,
)
from dtbundle.inventory.walk import Taken, created_now, take_inventory

__all__ = [
    "FORMAT_VERSION",
    "KIND",
    "Inventory",
    "InventoryRepository",
    "Taken",
    "WrittenInventory",
    "check_output",
    "created_now",
    "load_inventory",
    "make_inventory",
    "parse_inventory",
    "signature_path",
    "take_inventory",
    "write_inventory",
]
