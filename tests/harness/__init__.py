"""Test harness helpers shared by tests and benchmarks (real processes, cleaned up by pid)."""
