"""Models: one file per method (LightningModules and their inference wrappers)."""
