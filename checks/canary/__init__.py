"""Canaries and the silent-drop verdict: the message, the MTA log, bounce codes (ndr.toml), the verdict."""
