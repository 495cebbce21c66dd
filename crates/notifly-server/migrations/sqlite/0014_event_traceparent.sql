-- The W3C traceparent of the request that wrote an event, while traces are
-- exported (OTEL_EXPORTER_OTLP_ENDPOINT): its delivery attempts continue
-- that trace, on whichever node and however late they run. NULL otherwise.
ALTER TABLE events ADD COLUMN traceparent TEXT;
