"""Small embedded data sets (installed as ``molgen.embedded``); each folder has a PROVENANCE.md."""
