"""Neural network building blocks (encoders, layers)."""
