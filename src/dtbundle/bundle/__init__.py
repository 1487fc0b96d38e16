"""The bundle file: its format (catalog, names), tar, writer, reader, OCI layout and signing key."""
