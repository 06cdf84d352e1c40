"""ATOM: the Atomistic Transformer Operator for Molecules (Thompson, Guan, Shi et al. 2025, arXiv 2510.05482).

From the state at time t (positions ``x``, finite-difference velocities ``v``, atomic numbers ``Z``) ATOM
decodes all ``P`` future frames ``x(t + dT i / P)``, ``i = 1..P``, in one forward pass:

1. **Equivariant lifting** (e3nn). ``[x, |x|]`` and ``[v, |v|]`` (irreps ``1x1o+1x0e``) are lifted by
   :class:`e3nn.o3.Linear` to ``d`` channels laid out as ``(d // 3)x1o + (d % 3)x0e``; ``[v, |v|, Z]`` is lifted
   likewise and combined with the lifted positions by a :class:`~e3nn.o3.FullyConnectedTensorProduct`
   (the "concatenated" stream ``c = TP(L_x(x), L_vz(v, Z))``).
2. The three streams are replicated over the P time slots: tokens are all atoms x all slots (no graph).
3. **Trunk** of ``n_blocks`` blocks over the ``P * N`` tokens, on the flattened irreps channels (ordinary
   ``nn.Linear``/RMSNorm/SwiGLU, hence *quasi*-equivariant). Each block:
   ``h <- h + GHCA(q = c, streams = RMSNorm(h, v, c))``, ``h <- h + MLP(RMSNorm(h))`` (SwiGLU MLP with 2
   hidden layers, zero-initialised output), then the learnable value residual
   ``h <- s(l) h + (1 - s(l)) h_1`` to the first block's output. (Deviation: ATOM's code adds the residual to
   the *normalised* h, which discards each token's |x| scale; a standard pre-norm residual keeps the linear
   path from the lifted positions to the projection, and trains far faster on CPU budgets.)
4. **Equivariant projection** ``o3.Linear(hidden -> 1x1o)`` to absolute positions for every slot (optionally
   ``output_heads`` projections mixed by a softmax gate pooled from the concatenated stream, as in ATOM's
   multitask models).

GHCA: queries come from the (un-normalised) concatenated stream, ``Q = W_q c``; for every stream
``s in {h, v, c}`` keys and values use *shared* projections ``K_s = W_k s``, ``V_s = W_v s``; temporal RoPE
(slot index, base 1000) rotates Q and K; scores are ``Q K^T / d_head`` (ATOM divides by ``d_head``, not its
square root); the three outputs are mixed by ``softmax(w)`` gates, then ``W_o``.

During training, "Brownian" input noise of std ``noise_std`` (0.1) is added to the position, velocity and
velocity/Z features (not to Z), as ATOM does.

Shapes:
    x0, v0: ``[B, N, 3]`` Angstrom and Angstrom/frame; z: ``[B, N]`` long; mask: ``[B, N]`` bool (True = atom)
    output: ``[B, P, N, 3]`` absolute positions (Angstrom)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from e3nn import o3
from torch import nn


def lifting_irreps(d: int) -> o3.Irreps:
    """``(d // 3)x1o + (d % 3)x0e``: ``d`` channels, as many vectors as fit (42x1o+2x0e for d = 128)."""
    return o3.Irreps(f"{d // 3}x1o + {d % 3}x0e") if d % 3 else o3.Irreps(f"{d // 3}x1o")


class TemporalRoPE(nn.Module):
    """Rotary position embedding on the time-slot index of each token (Su et al. 2021, arXiv 2104.09864).

    Token ``k`` of a ``[P * N]`` sequence (slot-major) gets position ``k // N``; channel pairs ``(i, i + d/2)``
    are rotated by ``pos * base^(-2i/d)``.

    Shapes:
        input/output ``[B, H, P * N, d_head]``
    """

    def __init__(self, d_head: int, base: float = 1000.0):
        super().__init__()
        if d_head % 2:
            raise ValueError(f"d_head={d_head} must be even for RoPE")
        self.register_buffer("inv_freq", base ** (-torch.arange(0, d_head, 2).float() / d_head), persistent=False)

    def forward(self, t: torch.Tensor, n_atoms: int) -> torch.Tensor:
        pos = torch.arange(t.shape[-2], device=t.device) // n_atoms                 # [L]
        ang = pos[:, None].to(t.dtype) * self.inv_freq[None].to(t.dtype)            # [L, d/2]
        cos, sin = ang.cos(), ang.sin()
        a, b = t.chunk(2, dim=-1)
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class HeterogeneousCrossAttention(nn.Module):
    """GHCA: one query stream attends to several feature streams with shared K/V maps and gated mixing.

    ``out = W_o sum_s softmax(w)_s softmax(RoPE(Q) RoPE(K_s)^T / d_head) V_s``

    Args:
        dim: channels ``d``. n_heads: heads (``d_head = d / n_heads``). n_streams: number of key/value
        streams. rope_base: RoPE base. dropout: attention dropout.

    Shapes:
        q: ``[B, L, d]``; streams: ``n_streams`` x ``[B, L, d]``; key_mask: ``[B, L]`` bool -> ``[B, L, d]``
    """

    def __init__(self, dim: int, n_heads: int, n_streams: int = 3, rope_base: float = 1000.0, dropout: float = 0.2):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} is not divisible by n_heads={n_heads}")
        self.n_heads, self.d_head, self.dropout = n_heads, dim // n_heads, dropout
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.gate_logits = nn.Parameter(0.1 * torch.randn(n_streams))
        self.rope = TemporalRoPE(self.d_head, rope_base)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.n_heads, self.d_head).transpose(1, 2)  # [B, H, L, dh]

    def forward(self, q: torch.Tensor, streams: list[torch.Tensor], key_mask: torch.Tensor | None,
                n_atoms: int) -> torch.Tensor:
        B, L, d = q.shape
        qh = self.rope(self._heads(self.query(q)), n_atoms)
        attn_mask = key_mask[:, None, None, :] if key_mask is not None else None     # [B, 1, 1, L]
        gates = torch.softmax(self.gate_logits, dim=0)
        out = torch.zeros_like(qh)
        for g, s in zip(gates, streams):
            kh = self.rope(self._heads(self.key(s)), n_atoms)
            vh = self._heads(self.value(s))
            out = out + g * F.scaled_dot_product_attention(
                qh, kh, vh, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0,
                scale=1.0 / self.d_head)
        return self.out(out.transpose(1, 2).reshape(B, L, d))


class SwiGLU(nn.Module):
    """``silu(W_a x) * (W_b x)`` (Shazeer 2020, arXiv 2002.05202). Shapes: ``[..., d] -> [..., d]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.proj(x).chunk(2, dim=-1)
        return F.silu(a) * b


class ATOMBlock(nn.Module):
    """One trunk block: shared RMSNorm, GHCA + residual, SwiGLU MLP + residual (see module docstring)."""

    def __init__(self, dim: int, n_heads: int, rope_base: float, attention_dropout: float, ffn_dropout: float):
        super().__init__()
        self.norm = nn.RMSNorm(dim)  # shared by the three attention streams, as in ATOM
        self.ffn_norm = nn.RMSNorm(dim)
        self.attention = HeterogeneousCrossAttention(dim, n_heads, 3, rope_base, attention_dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), SwiGLU(dim), nn.Dropout(ffn_dropout),
                                 nn.Linear(dim, dim), SwiGLU(dim), nn.Dropout(ffn_dropout), nn.Linear(dim, dim))
        nn.init.zeros_(self.ffn[-1].weight)
        nn.init.zeros_(self.ffn[-1].bias)
        self.value_residual_logit = nn.Parameter(torch.tensor(0.5))

    def forward(self, h, v, c, q, key_mask, n_atoms, h_first):
        # pre-norm residual: the lifted-position stream h keeps its scale (absolute positions come out of it)
        h = h + self.attention(q, [self.norm(h), self.norm(v), self.norm(c)], key_mask, n_atoms)
        h = h + self.ffn(self.ffn_norm(h))
        if h_first is not None:  # learnable value residual to the first block's output
            lam = torch.sigmoid(self.value_residual_logit)
            h = lam * h + (1 - lam) * h_first
        return h


class ATOM(nn.Module):
    """ATOM forecaster (see the module docstring for the equations).

    Args:
        n_targets: P, future frames decoded in parallel (8).
        dim: trunk width ``d`` (128); lifted irreps ``(d//3)x1o + (d%3)x0e``.
        n_blocks: trunk blocks (5). n_heads: attention heads (8).
        rope_base: temporal RoPE base (1000). attention_dropout: 0.2. ffn_dropout: 0.1.
        output_heads: equivariant projections mixed by a learned gate (1; 8 in ATOM's multitask models).
        noise_std: Brownian input noise during training (0.1).
        z_scale: Z enters the lifting as the scalar ``Z * z_scale``.
        velocity_scale: velocities enter the lifting as ``v * velocity_scale``. ATOM feeds Angstrom per frame
            (1.0), about 4e-3 at 0.5 fs and 500 K, so the Brownian noise (0.1) drowns them; 250 makes them O(1).
        displacement: the projection predicts each frame's displacement from ``x0`` (added back here, and zero at
            initialisation, so an untrained model is the static baseline) instead of absolute positions, which
            a quasi-equivariant trunk reproduces only to ~0.1 A.
    """

    def __init__(self, n_targets: int = 8, dim: int = 128, n_blocks: int = 5, n_heads: int = 8,
                 rope_base: float = 1000.0, attention_dropout: float = 0.2, ffn_dropout: float = 0.1,
                 output_heads: int = 1, noise_std: float = 0.1, z_scale: float = 0.1, velocity_scale: float = 1.0,
                 displacement: bool = False):
        super().__init__()
        self.n_targets, self.dim, self.noise_std, self.z_scale = n_targets, dim, noise_std, z_scale
        self.velocity_scale, self.displacement = velocity_scale, displacement
        irreps = lifting_irreps(dim)
        if irreps.dim != dim:
            raise ValueError(f"dim={dim}: lifted irreps {irreps} have {irreps.dim} channels")
        self.lift_x = o3.Linear("1x1o + 1x0e", irreps)
        self.lift_v = o3.Linear("1x1o + 1x0e", irreps)
        self.lift_vz = o3.Linear("1x1o + 1x0e + 1x0e", irreps)
        self.lift_tp = o3.FullyConnectedTensorProduct(irreps, irreps, irreps)
        self.blocks = nn.ModuleList(ATOMBlock(dim, n_heads, rope_base, attention_dropout, ffn_dropout)
                                    for _ in range(n_blocks))
        self.project = nn.ModuleList(o3.Linear(irreps, "1x1o") for _ in range(output_heads))
        self.head_gate = (nn.Sequential(nn.Linear(dim, dim // 4), nn.SiLU(), nn.Linear(dim // 4, output_heads))
                          if output_heads > 1 else None)
        if displacement:
            for proj in self.project:
                nn.init.zeros_(proj.weight)

    def extra_repr(self) -> str:
        return (f"P={self.n_targets}, dim={self.dim}, blocks={len(self.blocks)}, noise_std={self.noise_std}, "
                f"velocity_scale={self.velocity_scale}, displacement={self.displacement}")

    def forward(self, x0: torch.Tensor, v0: torch.Tensor, z: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, _ = x0.shape
        P = self.n_targets
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=x0.device)
        m = mask[..., None].to(x0.dtype)
        # input features (irreps 1x1o + 1x0e [+ 1x0e]); padding atoms are zero
        fx = torch.cat([x0, x0.norm(dim=-1, keepdim=True)], -1) * m                  # [B, N, 4]
        vs = v0 * self.velocity_scale
        fv = torch.cat([vs, vs.norm(dim=-1, keepdim=True)], -1) * m                  # [B, N, 4]
        fvz = torch.cat([fv, z[..., None].to(x0.dtype) * self.z_scale], -1) * m      # [B, N, 5]
        if self.training and self.noise_std > 0:  # Brownian input noise (not on Z)
            fx = fx + self.noise_std * torch.randn_like(fx) * m
            fv = fv + self.noise_std * torch.randn_like(fv) * m
            noise = self.noise_std * torch.randn_like(fvz)
            noise[..., -1] = 0
            fvz = fvz + noise * m
        # 1. equivariant lifting
        lx = self.lift_x(fx)                                                          # [B, N, d]
        lv = self.lift_v(fv)                                                          # [B, N, d]
        lc = self.lift_tp(lx, self.lift_vz(fvz))                                      # [B, N, d]
        # 2. replicate over the P time slots, flatten slot-major: token k = (k // N, k % N)
        def slots(t: torch.Tensor) -> torch.Tensor:
            return t[:, None].expand(B, P, N, self.dim).reshape(B, P * N, self.dim)
        h, v, c = slots(lx), slots(lv), slots(lc)
        key_mask = mask[:, None, :].expand(B, P, N).reshape(B, P * N)
        # 3. trunk
        h_first = None
        for block in self.blocks:
            h = block(h, v, c, c, key_mask, N, h_first)
            if h_first is None:
                h_first = h
        # 4. equivariant projection to absolute positions
        out = torch.stack([proj(h) for proj in self.project], dim=-1)                # [B, P*N, 3, heads]
        if self.head_gate is not None:
            km = key_mask[..., None].to(c.dtype)
            pooled = (c * km).sum(1) / km.sum(1).clamp(min=1)                         # [B, d]
            w = torch.softmax(self.head_gate(pooled), dim=-1)                         # [B, heads]
            out = (out * w[:, None, None, :]).sum(-1)
        else:
            out = out[..., 0]
        out = out.view(B, P, N, 3)
        if self.displacement:
            out = out + x0[:, None]
        return out * mask[:, None, :, None]

