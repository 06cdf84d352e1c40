"""Molecular-dynamics forecasting helpers: evaluation (errors, pictures, equivariance)."""
