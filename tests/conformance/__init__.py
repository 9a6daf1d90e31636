"""Upstream NetworkPolicy e2e cases as data, the model cluster they run on, and their runner."""
