"""Blocklists: the zone catalog (zones.toml), zone health probing, and the look-ups themselves."""
