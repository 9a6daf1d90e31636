"""The node agent: keeps identities, compiled map state and classifier attachments in sync."""
