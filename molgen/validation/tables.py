"""Chemistry tables behind the three stability definitions (data, not code).

Three definitions of atom/molecule stability are in use in the 3D molecule generation literature, and numbers
under one are not comparable with numbers under another (see ``docs/validation.md``):

* **EDM** (Hoogeboom et al., ICML 2022, https://arxiv.org/abs/2203.17003): bonds are *inferred from distances*
  with typical bond lengths (pm) and margins (single if d < L1 + 10 pm, double if also d < L2 + 5 pm, triple if
  also d < L3 + 3 pm); an atom is stable if its summed bond order is an allowed *neutral* valence. The lengths
  below are EDM's ``qm9/bond_analyze.py`` values, which cite wiredchemist.com and chemistry-reference.com.
* **lenient** (MiDi, Vignac et al. 2023; FlowMol, Dunn & Koes 2024): the molecule's own bonds (aromatic = 1.5,
  summed then floored) and a charge-aware table in which neutral C with 3 bonds and neutral N with 2 pass.
* **revised** (PropMolFlow, Zeng et al. 2025, https://arxiv.org/abs/2505.21469): explicit valence minus formal
  charge must equal the neutral valence, and (our addition, intended but never checked by the reference code)
  the molecule's net charge must be zero.
"""
from __future__ import annotations

import numpy as np
from rdkit import Chem

from molgen.data.molecule import NEUTRAL_VALENCES as _NEUTRAL_VALENCES

_PT = Chem.GetPeriodicTable()

# ---------------------------------------------------------------------------------------------- EDM
#: Typical single-bond lengths in pm, symmetric (EDM ``bonds1``).
_SINGLE_PM: dict[tuple[str, str], int] = {}
#: Typical double-bond lengths in pm (EDM ``bonds2``).
_DOUBLE_PM: dict[tuple[str, str], int] = {}
#: Typical triple-bond lengths in pm (EDM ``bonds3``).
_TRIPLE_PM: dict[tuple[str, str], int] = {}


def _fill(table: dict, rows: str) -> None:
    """Fill a symmetric pair table from lines ``A B pm``."""
    for line in rows.strip().splitlines():
        a, b, pm = line.split()
        table[(a, b)] = table[(b, a)] = int(pm)


_fill(_SINGLE_PM, """
H H 74
H C 109
H N 101
H O 96
H F 92
H B 119
H Si 148
H P 144
H As 152
H S 134
H Cl 127
H Br 141
H I 161
C C 154
C N 147
C O 143
C F 135
C Si 185
C P 184
C S 182
C Cl 177
C Br 194
C I 214
N N 145
N O 140
N F 136
N Cl 175
N Br 214
N S 168
N I 222
N P 177
O O 148
O F 142
O Br 172
O S 151
O P 163
O Si 163
O Cl 164
O I 194
F F 142
F S 158
F Si 160
F Cl 166
F Br 178
F P 156
F I 187
B Cl 175
Si Si 233
Si S 200
Si Cl 202
Si Br 215
Si I 243
Cl Cl 199
Cl P 203
Cl S 207
Cl Br 214
S S 204
S Br 225
S P 210
S I 234
Br Br 228
Br P 222
P P 221
I I 266
""")
_fill(_DOUBLE_PM, """
C C 134
C N 129
C O 120
C S 160
N N 125
N O 121
O O 121
O P 150
P S 186
""")
_fill(_TRIPLE_PM, """
C C 120
C N 116
C O 113
N N 110
""")
#: EDM's margins in pm, "tuned to maximize the stability of the QM9 true samples".
EDM_MARGINS_PM = (10, 5, 3)

#: EDM's allowed (neutral) valences.
EDM_VALENCES: dict[str, tuple[int, ...]] = {
    "H": (1,), "C": (4,), "N": (3,), "O": (2,), "F": (1,), "B": (3,), "Al": (3,), "Si": (4,), "P": (3, 5),
    "S": (4,), "Cl": (1,), "As": (3,), "Br": (1,), "I": (1,), "Hg": (1, 2), "Bi": (3, 5),
}


def _pair_matrix(table: dict[tuple[str, str], int]) -> np.ndarray:
    """``[119, 119]`` float matrix of lengths in Angstrom indexed by atomic numbers (NaN: no such bond)."""
    m = np.full((119, 119), np.nan)
    for (a, b), pm in table.items():
        m[_PT.GetAtomicNumber(a), _PT.GetAtomicNumber(b)] = pm / 100.0
    return m


EDM_SINGLE_A, EDM_DOUBLE_A, EDM_TRIPLE_A = (_pair_matrix(t) for t in (_SINGLE_PM, _DOUBLE_PM, _TRIPLE_PM))

# ---------------------------------------------------------------------------------------------- lenient
#: MiDi/FlowMol's charge-aware table: ``{element: {formal charge: allowed valences}}``. An element given a single
#: entry accepts those valences at any charge; a charge missing from the table falls back to charge 0
#: (MiDi's behaviour).
LENIENT_VALENCES: dict[str, dict[int, tuple[int, ...]]] = {
    "H": {0: (1,), 1: (0,), -1: (0,)},
    "C": {0: (3, 4), 1: (3,), -1: (3,)},
    "N": {0: (2, 3), 1: (2, 3, 4), -1: (2,)},
    "O": {0: (2,), 1: (3,), -1: (1,)},
    "F": {0: (1,), -1: (0,)},
    "B": {0: (3,)}, "Al": {0: (3,)}, "Si": {0: (4,)},
    "P": {0: (3, 5), 1: (4,)},
    "S": {0: (2, 6), 1: (2, 3), 2: (4,), 3: (5,), -1: (3,)},
    "Cl": {0: (1,)}, "As": {0: (3,)},
    "Br": {0: (1,), 1: (2,)}, "I": {0: (1,)}, "Hg": {0: (1, 2)}, "Bi": {0: (3, 5)}, "Se": {0: (2, 4, 6)},
}
_LENIENT_ANY_CHARGE = {"B", "Al", "Si", "Cl", "As", "I", "Hg", "Bi", "Se"}  # given as a bare int/list in MiDi

# ---------------------------------------------------------------------------------------------- revised
#: Neutral valences for PropMolFlow's revised rule (explicit valence - formal charge must be one of them); the
#: table lives in :mod:`molgen.data.molecule`, beside the elements, so that samplers can decode under it too.
NEUTRAL_VALENCES = _NEUTRAL_VALENCES


def lenient_allowed(symbol: str, charge: int) -> tuple[int, ...] | None:
    """Allowed valences of ``symbol`` at ``charge`` in the MiDi/FlowMol table (None: element not in table)."""
    row = LENIENT_VALENCES.get(symbol)
    if row is None:
        return None
    if symbol in _LENIENT_ANY_CHARGE:
        return row[0]
    return row.get(charge, row[0])
