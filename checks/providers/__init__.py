"""What the mailbox providers say: Microsoft SNDS, Google Postmaster, complaint reports, OAuth tokens."""
