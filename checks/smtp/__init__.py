"""SMTP transport security: STARTTLS on every MX address, certificates and DANE."""
