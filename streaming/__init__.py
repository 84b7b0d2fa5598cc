"""The per-request pipeline: provider events in, typed frames out, nothing HTTP-specific."""
