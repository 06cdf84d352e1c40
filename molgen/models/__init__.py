"""Model architectures (one concept per file)."""
