"""What the worker and the gateway must agree on: events, SSE framing, keys, settings, the
Redis client factory and the publish script."""
