pytest_plugins = ["tests.upstreams.pool", "tests.redis_server"]
