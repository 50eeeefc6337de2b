"""SPF (RFC 7208): the record and macro parser, the check_host evaluator, and the lint."""
