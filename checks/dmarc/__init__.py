"""DMARC: record parsing and the policy discovery tree walk."""
