"""Protein and generative-model evaluation helpers (CPDiffusion-SS metrics in ss_metrics)."""
