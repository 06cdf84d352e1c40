"""Gaunt tensor products (Luo, Chen & Krishnapriyan, ICLR 2024) and an equivariant backbone built on them.

Functions:
    gaunt_tensor_product(x1, x2, lmax_out=None, method="auto"): SH coefficients of the product of two
        spherical functions (e3nn basis), O(L^3) by an S2 grid or 2D FFTs.
    sh_to_fourier(x), fourier_to_sh(F, lmax_out): the sparse change of basis between real SH and the 2D
        Fourier basis on the torus.
    e3nn_gaunt_tensor_product(L1, L2, Lo): the same function as an e3nn TensorProduct (slow reference).

Modules:
    GauntFeatureInteraction, GauntConvolution, GauntManyBody: the paper's three operation classes with
        per-(channel, degree) learnable weights.
    GauntBackbone: message-passing backbone, ``forward(h, pos, edge_index, edge_attr, batch) -> (h_out, vec_out)``.

See docs/gaunt.md for the method, the expressivity limit and benchmarks.
"""
from molgen.nn.gaunt._backbone import GauntBackbone
from molgen.nn.gaunt._modules import GauntConvolution, GauntFeatureInteraction, GauntManyBody
from molgen.nn.gaunt._product import fourier_to_sh, gaunt_tensor_product, sh_to_fourier
from molgen.nn.gaunt._reference import e3nn_gaunt_tensor_product, gaunt_path_weight

__all__ = [
    "gaunt_tensor_product",
    "sh_to_fourier",
    "fourier_to_sh",
    "e3nn_gaunt_tensor_product",
    "gaunt_path_weight",
    "GauntFeatureInteraction",
    "GauntConvolution",
    "GauntManyBody",
    "GauntBackbone",
]
