"""Command-line interface (kubectl-style)."""
