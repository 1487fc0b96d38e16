"""Local sample registries, token server, PKI and sample images for the demo and the tests.

Nothing in the installed CLI imports this package.
"""
