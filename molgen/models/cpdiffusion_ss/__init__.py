"""CPDiffusion-SS: secondary-structure-guided protein sequence design by latent graph diffusion.

``model`` (the LightningModule), ``protein_lm`` (sequence encoder and pooling), ``denoiser`` (the SS-graph
latent denoiser), ``decoder`` (latents -> sequence), ``ss_predictor`` (the in-project SS oracle),
``composition_baseline`` and ``designer`` (the user-facing object ``molgen.load`` returns)."""
from molgen.models.cpdiffusion_ss.model import CPDiffusionSS

__all__ = ["CPDiffusionSS"]
