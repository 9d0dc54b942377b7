"""What each asset does, as plain Python (no Dagster): the orchestration layer only wires it."""
