-- Traces: the W3C `traceparent` a task was submitted in (the submit's span when taskd
-- exports traces, else the caller's header as it came), so its attempts, in whatever
-- process and however much later, join that trace and pass it on.
ALTER TABLE tasks ADD COLUMN trace_parent TEXT;
