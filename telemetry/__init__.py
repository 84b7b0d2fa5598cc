"""What the service counts and times: Prometheus metrics, below every other layer."""
