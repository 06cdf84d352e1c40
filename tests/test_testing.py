"""The shipped symmetry test helpers: they pass for truly equivariant functions and raise AssertionError for
functions that break the declared symmetry (rotation, translation, permutation, and reflection alone)."""
import numpy as np
import pytest
import torch

from molgen.testing import assert_equivariant, assert_invariant, random_orthogonal


@pytest.fixture
def x():
    return torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def centred(x):
    return x - x.mean(0)


def distances(x):
    return torch.cdist(x, x)


def test_random_orthogonal_is_reproducible_and_has_the_asked_determinant():
    for seed in range(5):
        for proper in (True, False):
            q = random_orthogonal(seed, proper)
            torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)
            assert torch.linalg.det(q).item() == pytest.approx(1.0 if proper else -1.0)
            assert torch.equal(q, random_orthogonal(seed, proper))


def test_equivariant_functions_pass(x):
    assert_equivariant(lambda p: p, x, "position", "position")                        # the identity
    assert_equivariant(centred, x, "position", "vector", atol=1e-12, rtol=0)         # x - mean(x)
    assert_invariant(distances, x, "position", "pair", atol=1e-12, rtol=0)           # pairwise distances
    assert_invariant(lambda p: distances(p).sum(), x, "position", "invariant")       # a global invariant
    assert_equivariant(lambda p: p.mean(0, keepdim=True) - p, x, "position", "vector")
    # vectors [N, C, 3], per-atom scalars and a dense pair output, all at once
    v = torch.randn(7, 4, 3, dtype=torch.float64)
    s = torch.randn(7, 5, dtype=torch.float64)

    def layer(s, p, v):
        d = distances(p)
        gate = torch.tanh(s.sum(-1, keepdim=True) + v.norm(dim=-1))             # [N, C] invariant
        return gate, v * gate[..., None] + centred(p)[:, None, :], d

    assert_equivariant(layer, (s, x, v), ("scalar", "position", "vector"), ("scalar", "vector", "pair"))
    # per-graph vectors: a dipole of a neutral charge distribution, and an (axial) angular momentum
    q = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -1.0, -1.0], dtype=torch.float64)
    w = torch.randn(7, 3, dtype=torch.float64)
    assert_equivariant(lambda q, p: (q[:, None] * p).sum(0, keepdim=True), (q, x), ("scalar", "position"),
                       "graph_vector")
    assert_equivariant(lambda p, w: torch.linalg.cross(centred(p), w).sum(0, keepdim=True), (x, w),
                       ("position", "vector"), "graph_pseudovector")


def test_a_cross_product_is_a_pseudovector(x):
    v = torch.randn(7, 3, dtype=torch.float64)

    def cross(p, v):
        return torch.linalg.cross(centred(p), v)

    assert_equivariant(cross, (x, v), ("position", "vector"), "pseudovector")
    assert_equivariant(cross, (x, v), ("position", "vector"), "vector", rotations="proper")   # chirality-aware layer
    with pytest.raises(AssertionError, match="rotoreflection"):          # a reflection-only failure
        assert_equivariant(cross, (x, v), ("position", "vector"), "vector")
    with pytest.raises(AssertionError, match="rotoreflection"):
        assert_equivariant(cross, (x, v), ("position", "vector"), "vector", rotations="improper")
    # a signed volume is a pseudoscalar: invariant under rotations, odd under reflections
    volume = lambda p: torch.linalg.det(centred(p)[:3])[None]  # noqa: E731 -- of the first three atoms
    assert_equivariant(volume, x, "position", "pseudoscalar", permute=False)
    assert_invariant(volume, x, "position", rotations="proper", permute=False)
    with pytest.raises(AssertionError, match="rotoreflection"):
        assert_invariant(volume, x, "position", permute=False)


def test_non_equivariant_functions_fail(x):
    const = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    with pytest.raises(AssertionError, match="position"):
        assert_equivariant(lambda p: p + const, x, "position", "position")     # x + a constant vector
    with pytest.raises(AssertionError, match="scalar"):
        assert_invariant(lambda p: p[:, 0], x, "position", "scalar")           # a coordinate is no scalar
    with pytest.raises(AssertionError, match="vector"):
        assert_equivariant(lambda p: p, x, "position", "vector")                # positions are not translation-free
    with pytest.raises(AssertionError, match="permutation"):                    # order-dependent: breaks permutations
        assert_equivariant(lambda p: centred(p).cumsum(0), x, "position", "vector")
    assert_equivariant(lambda p: centred(p).cumsum(0), x, "position", "vector", permute=False)


def test_edge_index_and_batch_are_permuted_consistently():
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(9, 3, generator=g, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    edge_index = torch.tensor([[0, 1, 2, 4, 5, 6, 8, 3], [1, 2, 3, 5, 6, 7, 4, 0]])

    def message(pos, edge_index, batch):
        src, dst = edge_index
        agg = torch.zeros_like(pos).index_add_(0, dst, pos[src] - pos[dst])          # per-atom vectors
        energy = torch.zeros(2, dtype=pos.dtype).index_add_(0, batch, (agg ** 2).sum(-1))   # per graph
        return agg, energy, (pos[src] - pos[dst]).norm(dim=-1)                        # per edge, edge order kept

    assert_equivariant(message, (pos, edge_index, batch), ("position", "edge_index", "batch"),
                       ("vector", "invariant", "invariant"))
    # edges not relabelled with the atoms: the check fails
    with pytest.raises(AssertionError, match="permutation"):
        assert_equivariant(message, (pos, edge_index, batch), ("position", None, "batch"),
                           ("vector", "invariant", "invariant"))
    # one shift per graph: a function that centres all graphs together is not translation equivariant per graph
    with pytest.raises(AssertionError, match="translation"):
        assert_equivariant(lambda p, b: p - p.mean(0), (pos, batch), ("position", "batch"), "vector")


def test_numpy_inputs_and_outputs():
    pos = np.random.default_rng(0).normal(size=(5, 3))
    assert_invariant(lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1), pos, "position", "pair")
    with pytest.raises(AssertionError):
        assert_invariant(lambda p: p[:, :1] ** 2, pos, "position", "scalar")


def test_bad_declarations_are_value_errors(x):
    with pytest.raises(ValueError, match="unknown output kind"):
        assert_equivariant(centred, x, "position", "vectr")
    with pytest.raises(ValueError, match="1 inputs but 2 in_types"):
        assert_equivariant(centred, x, ("position", "scalar"), "vector")
    with pytest.raises(ValueError, match="use assert_equivariant"):
        assert_invariant(centred, x, "position", "vector")
    with pytest.raises(ValueError, match="rotations="):
        assert_equivariant(centred, x, "position", "vector", rotations="SO3")
