"""Server-side staff blueprint: login, accounts, triage, keys, assignment, audit log."""
