"""molgen's Hydra config groups (installed as ``molgen.configs``)."""
