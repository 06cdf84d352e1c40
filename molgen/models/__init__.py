"""One LightningModule (or model object) per method, built from molgen.nn layers and molgen.generative processes."""
