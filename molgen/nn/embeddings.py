r"""Fixed sinusoidal embeddings of positions, time steps or slot indices (Vaswani et al. 2017,
https://arxiv.org/abs/1706.03762): one function, the channel layout as an argument.

For a position ``p`` and ``dim`` channels the frequencies are :math:`\omega_k = P^{-2k/\mathrm{dim}}`,
``k = 0 .. ceil(dim / 2) - 1`` (``P`` = ``max_period``, 10000), and the layouts are

* ``"sin_cos"``: ``[sin(p w_0), ..., sin(p w_K), cos(p w_0), ..., cos(p w_K)]`` (tensor2tensor's layout);
* ``"cos_sin"``: the same with cos first (ADM / guided-diffusion's ``timestep_embedding``, whose
  ``P^{-k / (dim/2)}`` is the same frequency);
* ``"interleaved"``: ``sin(p w_k)`` at channel ``2k``, ``cos(p w_k)`` at ``2k + 1`` (the Transformer paper's
  positional encoding);

each truncated to ``dim`` channels (odd ``dim``: the last cos, resp. sin, is dropped). Computed in float32 with
the reference implementations' operations: ``"interleaved"`` rounds the frequencies as the Transformer
reference code does (``arange(0, dim, 2) * (-ln P / dim)``), which differs from the concatenated layouts' in the
last bit for some ``dim`` (e.g. 96); kept so that checkpoints trained with either reproduce exactly.
"""
from __future__ import annotations

import math

import torch
from torch import nn

LAYOUTS = ("sin_cos", "cos_sin", "interleaved")


def sinusoidal_embedding(positions: torch.Tensor, dim: int, layout: str = "sin_cos",
                         max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of ``positions`` (integer or real). Shapes: ``[...]`` -> ``[..., dim]`` float32."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    device = positions.device
    if layout == "interleaved":
        freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(max_period) / dim))
    else:
        freq = torch.exp(-math.log(max_period) * torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    args = positions.float()[..., None] * freq                                # [..., ceil(dim/2)]
    if layout == "sin_cos":
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)[..., :dim]
    if layout == "cos_sin":
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)[..., :dim]
    out = args.new_zeros(*args.shape[:-1], dim)
    out[..., 0::2] = torch.sin(args)
    out[..., 1::2] = torch.cos(args[..., : dim // 2])
    return out


class SinusoidalPositions(nn.Module):
    """Adds fixed sinusoidal encodings of the sequence index (a non-persistent buffer of ``max_len`` rows).

    Args:
        dim: channels. max_len: longest sequence. layout, max_period: see :func:`sinusoidal_embedding`
            (default: the Transformer paper's interleaved layout).

    Shapes: ``(B, L, dim)`` -> ``(B, L, dim)``.
    """

    def __init__(self, dim: int, max_len: int = 4096, layout: str = "interleaved", max_period: float = 10000.0):
        super().__init__()
        self.register_buffer("pe", sinusoidal_embedding(torch.arange(max_len), dim, layout, max_period),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.shape[1]].unsqueeze(0)
