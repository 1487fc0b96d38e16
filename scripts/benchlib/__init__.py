"""Helpers of scripts/bench.py: the delaying proxy, seeding, the floor clients and the suite.

Not part of dtbundle: nothing under src/ imports these, and they import dtbundle only to seed
registries (the floor clients use httpx, hashlib and zstandard alone).
"""
