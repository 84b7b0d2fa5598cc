"""The HTTP edge: routes, request parsing and validation, responses, middleware, the error
envelope, lifecycle and readiness.
"""
