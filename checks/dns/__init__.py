"""The one DNS client: wire format, UDP/TCP transport, outcomes, and the resolver with its cache."""

from checks.dns._startup import answer_feature_probe

answer_feature_probe()  # before any module here imports dnspython
