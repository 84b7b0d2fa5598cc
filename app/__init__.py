"""The HTTP edge: routes, validation, request context, logs."""
