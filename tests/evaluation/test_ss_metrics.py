"""CPDiffusion-SS metric definitions on hand-made element strings (the paper's metrics.py semantics)."""
from __future__ import annotations

import numpy as np
import pytest

from molgen.data.proteins import element_string
from molgen.testing import assert_invariant
from molgen.evaluation.ss_metrics import (consistency, novelty, pairwise_identity, q3, ss_composition,
                                          ss_composition_mse, ss_identity, sequence_identity)


def test_element_string_collapses_runs():
    assert element_string("CCHHHHCEEEC") == "CHCEC"
    assert element_string("") == ""


def test_identity_on_element_strings():
    assert ss_identity("CHCEC", "CHCEC") == 100.0
    # CHC vs CHCEC: 3 identities + 2 gaps -> 60 %
    assert ss_identity("CHC", "CHCEC") == pytest.approx(60.0)
    # one substitution out of five aligned columns (gap-free is among the optimal alignments here)
    assert ss_identity("CHCHC", "CHCEC") in (pytest.approx(80.0), pytest.approx(4 / 6 * 100))
    assert ss_identity("", "CHC") == 0.0


def test_identity_without_loops_deletes_c():
    # w/o loop: HEH vs HEH
    assert ss_identity("CHCECHC", "HCECH", remove_loop=True) == 100.0
    assert ss_identity("CCC", "CHC", remove_loop=True) == 0.0   # nothing left in the design


def test_composition_mse_by_hand():
    # CHC: H 1/3, E 0, C 2/3 ; CEC: H 0, E 1/3, C 2/3 -> ((1/3)^2 + (1/3)^2 + 0) / 3
    assert ss_composition_mse("CHC", "CEC") == pytest.approx(2 / 27)
    np.testing.assert_allclose(ss_composition("CHCEC"), [0.2, 0.2, 0.6])
    # w/o loop: H vs E -> fractions [1,0,0] vs [0,1,0] -> 2/3
    assert ss_composition_mse("CHC", "CEC", remove_loop=True) == pytest.approx(2 / 3)
    np.testing.assert_allclose(ss_composition("CCC", remove_loop=True), [0, 0, 0])


def test_consistency_top_k_and_max():
    target = "CCHHHHCCEEEECC"                        # elements CHCEC
    designs = ["CHHHCEEC"] * 3 + ["CCCC"] * 12        # 3 perfect (CHCEC), 12 coil-only (C: 1/5 identity)
    c = consistency(designs, target, top_k=10)
    assert c["ID_max"] == 100.0
    assert c["ID"] == pytest.approx((3 * 100 + 7 * 20) / 10)
    assert c["MSE"] == pytest.approx(100 * (3 * 0 + 12 * ss_composition_mse("C", "CHCEC")) / 15)


def test_sequence_identity_diversity_novelty():
    a = "MKTAYIAKQRQISFVKSHFSRQ"
    assert sequence_identity(a, a) == 100.0
    assert pairwise_identity([a, a, a]) == 100.0
    assert np.isnan(pairwise_identity([a]))
    ref = ["GGGGSGGGGSGGGG", a + "LL", "PPPPPPPPPPPPPP"]
    assert novelty([a], ref) == [100.0]
    assert novelty(["WWWWWWWWWWWW"], ref)[0] < 30


def test_q3():
    assert q3(["HHEC", "CC"], ["HHCC", "CE"]) == pytest.approx(4 / 6)


def test_tm_diversity_on_real_structures():
    from pathlib import Path

    import torch

    from molgen.data.proteins import read_structure
    from molgen.evaluation.ss_metrics import tm_diversity

    data = Path(__file__).parents[1] / "data" / "cpdiffusion_ss"
    # 1r7aA02 and 1g5aA03 share a CATH superfamily (3.90.400.10); 1c0pA01 does not
    a, b, c = (read_structure(data / f"{d}.pdb") for d in ("1r7aA02", "1g5aA03", "1c0pA01"))
    # a rigid motion (proper: a mirror image is another fold) of a structure is the same structure
    assert tm_diversity([a.ca, a.ca], [a.sequence, a.sequence]) == pytest.approx(1.0, abs=1e-3)
    assert_invariant(lambda ca: torch.tensor(tm_diversity([a.ca, ca], [a.sequence, a.sequence])), a.ca, "position",
                     rotations="proper", permute=False, translation_scale=7.0, atol=1e-3, rtol=0)
    same_family = tm_diversity([a.ca, b.ca], [a.sequence, b.sequence])
    other = tm_diversity([a.ca, c.ca], [a.sequence, c.sequence])
    assert 0.5 < same_family < 1.0 and other < same_family and other < 0.5
