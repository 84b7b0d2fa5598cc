pytest_plugins = ["tests.upstreams.pool"]
