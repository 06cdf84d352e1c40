"""SiLD: SE(3)-invariant latent diffusion for 3D molecules (GeoLDM family). ``model``: the LightningModule;
``nets``: the equivariant encoders, decoder, bond head and latent denoiser."""
from molgen.models.sild.model import SiLD

__all__ = ["SiLD"]
