"""The TOML configuration: typed, validated sections, secrets from inline values, files or commands."""
