-- When the current (or last) run of a job was claimed, for enqueue-to-start latency.

ALTER TABLE jobs ADD COLUMN started_at BIGINT;
