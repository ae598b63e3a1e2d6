"""Test helpers shipped with the core (the backend contract suite)."""
