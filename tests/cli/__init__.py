"""Tests of the command line: inputs, offline commands, lazy imports."""
