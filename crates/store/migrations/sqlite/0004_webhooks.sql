-- The webhook signing secret of a connector, sealed like the client secret.

ALTER TABLE connectors ADD COLUMN webhook_secret BLOB;
