"""Configuration: the environment and the TOML file, read once into frozen settings, and the route
chain built from them.
"""
