r"""Discrete flow matching with a masking continuous-time Markov chain (Campbell et al. 2024,
https://arxiv.org/abs/2402.04997), as FlowMol2/PropMolFlow use it for atom types, charges and bond orders.

Every token of a categorical feature with ``K`` classes lives in ``{0..K-1} ∪ {MASK}`` (``MASK = K``).

* **Prior / corruption.** At time t a token shows its true class with probability :math:`\kappa_t` and MASK
  otherwise: :math:`p_t(x_t \mid x_1) = \kappa_t\,\delta_{x_1} + (1-\kappa_t)\,\delta_{MASK}`.
* **Loss.** Cross-entropy of the predicted endpoint distribution :math:`p_\theta(x_1 \mid x_t)` on the tokens
  that are still masked (the unmasked ones are already known).
* **Sampling step** from t to t + dt with stochasticity :math:`\eta` (Campbell et al. eq. for the masking
  rate matrix with detailed-balance noise): draw :math:`\hat x_1 \sim p_\theta(\cdot \mid x_t)` (sharpened by a
  temperature); a masked token jumps to :math:`\hat x_1` with probability
  :math:`\mathrm{d}t\,(\dot\kappa_t + \eta\,\kappa_t)/(1-\kappa_t)`; an unmasked token is re-masked with
  probability :math:`\mathrm{d}t\,\eta`. The last step only unmasks (every token ends unmasked).
"""
from __future__ import annotations

import torch

from molgen.generative.schedule import InterpolantSchedule, LinearInterpolant


class MaskingCTMC:
    """Masking CTMC for one categorical feature.

    Args:
        n_classes: ``K``, real classes; the mask token is index ``K``.
        schedule: the interpolant ``kappa_t`` (default linear).
    """

    def __init__(self, n_classes: int, schedule: InterpolantSchedule | None = None):
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = n_classes
        self.mask_index = n_classes
        self.schedule = schedule or LinearInterpolant()

    def prior(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
        """All-mask tokens, long ``shape``."""
        return torch.full(shape, self.mask_index, dtype=torch.long, device=device)

    def corrupt(self, x1: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``x_t ~ p_t(. | x1)``: ``x1 [...]`` long, ``t`` broadcastable to it -> ``x_t [...]`` long."""
        keep = torch.rand(x1.shape, generator=generator).to(x1.device) < self.schedule.kappa(t)
        return torch.where(keep, x1, torch.full_like(x1, self.mask_index))

    def mask_more(self, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample an earlier state ``x_s ~ p(x_s | x_t)`` for ``s <= t`` on the same path: each unmasked token of
        ``x_t`` stays with probability ``kappa(s) / kappa(t)``, so ``x_s`` with ``x_t ~ p_t(. | x1)`` is distributed
        as ``p_s(. | x1)`` and its masked set contains ``x_t``'s. ``t``, ``s`` broadcastable to ``x_t``."""
        kt, ks = self.schedule.kappa(t), self.schedule.kappa(s)
        ratio = torch.where(kt > 0, ks / kt.clamp(min=1e-12), torch.zeros_like(kt)).clamp(max=1.0)
        keep = torch.rand(x_t.shape, generator=generator).to(x_t.device) < ratio
        return torch.where(keep, x_t, torch.full_like(x_t, self.mask_index))

    def is_masked(self, x_t: torch.Tensor) -> torch.Tensor:
        """Where the loss applies: ``[...]`` bool."""
        return x_t == self.mask_index

    def one_hot(self, x_t: torch.Tensor) -> torch.Tensor:
        """Network input: one-hot including the mask class, ``[..., K + 1]`` float."""
        return torch.nn.functional.one_hot(x_t, self.n_classes + 1).float()

    def step(self, x_t: torch.Tensor, logits: torch.Tensor, t: float, dt: float, stochasticity: float = 10.0,
             temperature: float = 0.05, last_step: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One Euler step of the CTMC from ``t`` to ``t + dt``.

        Args:
            x_t: ``[m]`` current tokens.
            logits: ``[m, K]`` predicted endpoint logits.
            stochasticity: ``eta`` (re-masking rate); 0 gives the deterministic-rate masking flow.
            temperature: endpoint distribution is ``softmax(logits / temperature)``.
            last_step: only unmask, and unmask every remaining token.

        Returns:
            ``x_{t+dt} [m]``.
        """
        tt = torch.as_tensor(t, dtype=torch.float64)
        a, da = float(self.schedule.kappa(tt)), float(self.schedule.d_kappa(tt))
        probs = torch.softmax(logits.double() / temperature, -1).cpu()               # [m, K]
        x1_hat = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(x_t.device)  # [m]
        u = torch.rand(x_t.shape, generator=generator).to(x_t.device)                 # [m]
        masked = x_t == self.mask_index
        if last_step:
            p_unmask, p_remask = 1.0, 0.0
        else:
            p_unmask = min(1.0, dt * (da + stochasticity * a) / max(1.0 - a, 1e-12))
            p_remask = min(1.0, dt * stochasticity)
        # one uniform per token decides both events (a token is either masked or not)
        unmask = masked & (u < p_unmask)
        remask = ~masked & (u < p_remask)
        out = torch.where(unmask, x1_hat, x_t)
        return torch.where(remask, torch.full_like(out, self.mask_index), out)

    def __repr__(self) -> str:
        return f"MaskingCTMC(n_classes={self.n_classes}, schedule={self.schedule!r})"
