"""The one DNS client: wire format, UDP/TCP transport, outcomes, and the resolver with its cache."""
