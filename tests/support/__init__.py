"""Shared helpers of the test suite: plain functions, constants and dataclasses.

Fixtures live in ``tests/conftest.py``; everything a test module imports comes from here,
so no test module imports another one:

- ``bundles``: take bundles apart and put (tampered) ones back together;
- ``cli``: run dtbundle as a user does, in a subprocess or in-process, and check its errors;
- ``registries``: clients, references and credentials for the sandbox registries, and the
  sample images by name;
- ``artifacts``: OCI artifacts and keys that tests build themselves.
"""
