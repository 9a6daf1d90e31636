"""Security identities: canonical label sets, reserved numbers, allocation."""
