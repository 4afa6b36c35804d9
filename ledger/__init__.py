"""The HOURS ledger: double-entry accounts, admin grants and the transfers under tips."""
