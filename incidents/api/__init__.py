"""The JSON API desks use: case bundles, desk outputs, revocation and organizer key rotation."""
