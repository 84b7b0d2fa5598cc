"""The `hello-ship` command line: serve, eval, smoke, hash-key."""
