"""Batched, masked rigid-body geometry: Kabsch rotation and alignment, rotation vectors."""
import torch
from e3nn import o3

from molgen.nn.geometry import centred, kabsch_align, kabsch_rotation, rotation_vector, skew


def test_batched_masked_kabsch_recovers_each_rotation_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    mask = torch.arange(7)[None] < torch.tensor([7, 5, 4, 3])[:, None]
    R = o3.rand_matrix(4, dtype=torch.float64)
    q = p @ R.transpose(1, 2) + torch.randn(4, 1, 3, generator=g, dtype=torch.float64)
    q = torch.where(mask[..., None], q, torch.full_like(q, 99.0))           # garbage in padding rows
    pc, qc = centred(p, mask)[0], centred(q, mask)[0]
    torch.testing.assert_close(kabsch_rotation(pc, qc, mask), R, atol=1e-9, rtol=0)
    aligned = kabsch_align(p, q, mask)
    torch.testing.assert_close(aligned[mask], q[mask], atol=1e-9, rtol=0)
    assert (aligned[~mask] == 0).all()


def test_a_reflection_is_never_returned():
    p = centred(torch.randn(1, 6, 3, dtype=torch.float64))[0]
    mirror = p * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.linalg.det(kabsch_rotation(p, mirror))[0] > 0


def test_rotation_vector_inverts_the_exponential_of_skew():
    w = torch.tensor([[0.3, -0.2, 0.5], [1e-9, 0.0, 0.0], [0.0, 2.5, 0.1]], dtype=torch.float64)
    torch.testing.assert_close(rotation_vector(torch.linalg.matrix_exp(skew(w))), w, atol=1e-9, rtol=0)
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(skew(w) @ v, torch.cross(w, v.expand_as(w), dim=-1))
