"""Trainable generators and predictors (LightningModules); import the submodules directly."""
