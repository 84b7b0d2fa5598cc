"""Cached answers: exact and near-duplicate lookup per tenant."""
