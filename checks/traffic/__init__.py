"""What the MTA's log says of outbound mail.

`lines` is the one parser of Postfix and OpenSMTPD log lines (the canary trace uses it too); `providers` tells
which provider family a delivery went to (providers.toml); `tally` counts per provider, domain and day, with the
replies explained; `follow` reads a growing log across rotations, or the journal, from a stored position.
"""
