r"""Valence-constrained decoding of a molecule's categorical tokens (atom types, formal charges, bond orders).

A sampler that draws every token independently from the network's endpoint distribution can leave an atom one
bond short (an open shell) even when each token is likely: with few integration steps many tokens that depend
on each other are decided in the same step. :func:`valence_decode` instead picks, for one molecule, the joint
assignment with the highest total log-probability such that every atom satisfies

.. math:: \sum_{j} \mathrm{order}(b_{ij}) - q_i \in V(a_i)

(PropMolFlow's revised rule: explicit valence minus formal charge is a neutral valence of the element), and,
optionally, a given net charge. It is a small integer linear program (one binary per candidate class of each
token; HiGHS through :func:`scipy.optimize.milp`); classes more than ``window`` nats below a token's best are
left out, which keeps it to a few dozen variables for a QM9-sized molecule.

:func:`decision_scores` turns a masking CTMC's state before its last step and the network's last prediction into
the per-token scores: masked tokens score by the prediction; a token already decided scores
``log(0.99 [k = decided] + 0.01 p(k))``, so it keeps its class unless the valence rule needs a change, and a change
costs at least log(1 / 0.01) = 4.6 nats, less where the prediction agrees with it.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["decision_scores", "valence_decode"]

#: what an atom type without a valence table may take (anything from 0 to 8 bonds' worth)
_ANY_VALENCE = tuple(range(9))


def decision_scores(x_t: torch.Tensor, logits: torch.Tensor, mask_index: int, change: float = 0.01) -> np.ndarray:
    """Per-token class scores (log-probabilities) for :func:`valence_decode`.

    Args:
        x_t: ``[m]`` tokens before the last sampling step (``mask_index`` = not decided yet).
        logits: ``[m, K]`` the network's endpoint logits at that step.
        mask_index: the mask token.
        change: for decided tokens, the weight of the prediction against the decided class: the score is
            ``log((1 - change) [k = x_t] + change p(k))``; 0 fixes decided tokens, 1 ignores the decision.

    Returns:
        ``[m, K]`` float64 scores.
    """
    logp = torch.log_softmax(logits.double(), -1).cpu()
    decided = x_t.cpu() != mask_index
    if bool(decided.any()):
        p = logp[decided].exp() * change
        p[torch.arange(p.shape[0]), x_t.cpu()[decided]] += 1.0 - change
        logp[decided] = p.clamp(min=1e-300).log()
    return logp.numpy()


def valence_decode(atom_scores: np.ndarray, charge_scores: np.ndarray, bond_scores: np.ndarray, pairs: np.ndarray,
                   valences: list[tuple[int, ...]], charges: list[int], bond_orders: list[float],
                   net_charge: int | None = None, connected: bool = False, can_bond: np.ndarray | None = None,
                   window: float = 20.0) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The most probable token assignment of one molecule under the valence rule.

    Args:
        atom_scores: ``[n, A]`` log-scores of the atom-type classes.
        charge_scores: ``[n, Q]`` log-scores of the formal-charge classes.
        bond_scores: ``[P, B]`` log-scores of the bond classes of each atom pair (class 0 = no bond).
        pairs: ``[P, 2]`` the two atoms (0-based, within the molecule) of each pair.
        valences: per atom-type class, the allowed values of ``sum(bond orders) - charge``; an empty tuple
            leaves atoms of that type (almost) unconstrained: any value from 0 to 8.
        charges: formal charge of each charge class.
        bond_orders: valence contribution of each bond class (``[0, 1, 2, 3, 1.5]`` for none, single, double,
            triple, aromatic).
        net_charge: if given, the charges must sum to it.
        connected: the bonds must connect every atom (one molecule, not fragments): a single-commodity flow
            from atom 0 that only bonded pairs carry. Only pairs with a bond class inside the window can bond, so
            fragments far apart (where the network puts no probability on a bond) stay infeasible.
        can_bond: ``[P]`` bool, the pairs where a bond may be introduced (e.g. those close enough in the
            generated geometry); elsewhere a bond stays only if the scores already rank it first. None: anywhere.
        window: classes scoring more than ``window`` below their token's best are not considered.

    Returns:
        ``(atom classes [n], charge classes [n], bond classes [P])`` as int64 arrays, or None when no assignment
        within the window satisfies the constraints.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    n, n_pairs = atom_scores.shape[0], bond_scores.shape[0]
    groups = [atom_scores, charge_scores, bond_scores]
    best = [s.argmax(1) if s.shape[0] else np.zeros(0, np.int64) for s in groups]
    if _satisfies(*best, pairs, valences, charges, bond_orders, net_charge, connected):
        return best[0], best[1], best[2]     # the unconstrained optimum is feasible: nothing to solve
    # candidate (token, class) variables of each group, token ids numbered across groups
    tok_off = np.cumsum([0, n, n])
    var_tok, var_cls, var_group = [], [], []
    for g, s in enumerate(groups):
        keep = s >= s.max(1, keepdims=True) - window
        if g == 2 and can_bond is not None:
            cls = np.arange(s.shape[1])[None, :]
            keep &= (cls == 0) | np.asarray(can_bond, dtype=bool)[:, None] | (cls == best[2][:, None])
        t, k = np.nonzero(keep)
        var_tok.append(t + tok_off[g])
        var_cls.append(k)
        var_group.append(np.full(t.shape, g))
    vt, vk, vg = (np.concatenate(v) for v in (var_tok, var_cls, var_group))
    cost = -np.concatenate([groups[g][t - tok_off[g], k] for g, t, k in
                            zip(range(3), var_tok, var_cls)])
    # valence choices: one binary per (atom, allowed value of its candidate type) -> "slack" variables
    rows, cols, vals, lo, hi = [], [], [], [], []
    n_var = cost.size
    slack_atom, slack_val, slack_of = [], [], []
    for v in np.nonzero(vg == 0)[0]:
        allowed = valences[vk[v]] or _ANY_VALENCE
        for val in allowed:
            slack_atom.append(vt[v]); slack_val.append(val); slack_of.append(v)
    n_slack = len(slack_atom)
    # every token takes exactly one class
    n_tok = 2 * n + n_pairs
    rows += list(vt); cols += list(range(n_var)); vals += [1.0] * n_var
    lo += [1.0] * n_tok; hi += [1.0] * n_tok
    r = n_tok
    # a type with allowed values takes exactly one of them: sum(slack of v) - x_v = 0
    slack_of = np.asarray(slack_of, dtype=np.int64)
    constrained = np.unique(slack_of) if n_slack else np.zeros(0, np.int64)
    row_of_var = {int(v): r + i for i, v in enumerate(constrained)}
    for s_i, v in enumerate(slack_of):
        rows.append(row_of_var[int(v)]); cols.append(n_var + s_i); vals.append(1.0)
    for v in constrained:
        rows.append(row_of_var[int(v)]); cols.append(int(v)); vals.append(-1.0)
    lo += [0.0] * len(constrained); hi += [0.0] * len(constrained)
    r += len(constrained)
    # valence per atom: sum(order * bond var) - sum(q * charge var) - sum(value * slack) = 0
    atom_row = {i: r + i for i in range(n)}
    r += n
    for v in np.nonzero(vg == 1)[0]:
        if charges[vk[v]] != 0:
            rows.append(atom_row[int(vt[v] - tok_off[1])]); cols.append(int(v)); vals.append(-float(charges[vk[v]]))
    for v in np.nonzero(vg == 2)[0]:
        order = float(bond_orders[vk[v]])
        if order == 0.0:
            continue
        for i in pairs[vt[v] - tok_off[2]]:
            rows.append(atom_row[int(i)]); cols.append(int(v)); vals.append(order)
    for s_i, (i, val) in enumerate(zip(slack_atom, slack_val)):
        rows.append(atom_row[int(i)]); cols.append(n_var + s_i); vals.append(-float(val))
    lo += [0.0] * n; hi += [0.0] * n
    if net_charge is not None:
        for v in np.nonzero(vg == 1)[0]:
            rows.append(r); cols.append(int(v)); vals.append(float(charges[vk[v]]))
        lo.append(float(net_charge)); hi.append(float(net_charge))
        r += 1
    total = n_var + n_slack
    upper = np.ones(total)
    integral = np.ones(total)
    if connected and n > 1:
        # flows f(i->j), f(j->i) >= 0 on every pair that can bond; f(i->j) + f(j->i) <= (n - 1) * bonded(pair);
        # atom 0 sends n - 1 units, every other atom keeps one
        bonded = [v for v in np.nonzero(vg == 2)[0] if bond_orders[vk[v]] != 0]
        pair_vars: dict[int, list[int]] = {}
        for v in bonded:
            pair_vars.setdefault(int(vt[v] - tok_off[2]), []).append(int(v))
        flow, cons = total, r + len(pair_vars)          # conservation rows: cons + atom, after the capacities
        for p_i, bond_vars in pair_vars.items():
            i, j = (int(x) for x in pairs[p_i])
            rows += [r, r]; cols += [flow, flow + 1]; vals += [1.0, 1.0]
            for v in bond_vars:
                rows.append(r); cols.append(v); vals.append(-(n - 1.0))
            lo.append(-np.inf); hi.append(0.0)
            r += 1
            for src, dst, f in ((i, j, flow), (j, i, flow + 1)):
                rows += [cons + src, cons + dst]; cols += [f, f]; vals += [-1.0, 1.0]
            flow += 2
        lo += [-(n - 1.0)] + [1.0] * (n - 1); hi += [-(n - 1.0)] + [1.0] * (n - 1)
        r += n
        n_flow = flow - total
        upper = np.concatenate([upper, np.full(n_flow, n - 1.0)])
        integral = np.concatenate([integral, np.zeros(n_flow)])
        total = flow
    a = coo_matrix((vals, (rows, cols)), shape=(r, total)).tocsr()
    c = np.concatenate([cost, np.zeros(total - n_var)])
    res = milp(c, constraints=LinearConstraint(a, lo, hi), integrality=integral, bounds=Bounds(0, upper))
    if res.status != 0 or res.x is None:
        return None
    chosen = res.x[:n_var] > 0.5
    out = np.zeros(n_tok, dtype=np.int64)
    out[vt[chosen]] = vk[chosen]
    return out[:n], out[n:2 * n], out[2 * n:]


def _satisfies(atom: np.ndarray, charge: np.ndarray, bond: np.ndarray, pairs: np.ndarray,
               valences: list[tuple[int, ...]], charges: list[int], bond_orders: list[float],
               net_charge: int | None, connected: bool = False) -> bool:
    """Whether an assignment keeps every atom at an allowed valence (and the net charge, and is connected)."""
    q = np.asarray(charges, dtype=np.float64)[charge]
    if net_charge is not None and q.sum() != net_charge:
        return False
    val = np.zeros(atom.shape[0])
    order = np.asarray(bond_orders, dtype=np.float64)[bond]
    np.add.at(val, pairs[:, 0], order)
    np.add.at(val, pairs[:, 1], order)
    if not all((v - qi) in (valences[t] or _ANY_VALENCE) for v, qi, t in zip(val, q, atom)):
        return False
    return not connected or _n_components(atom.shape[0], pairs[order > 0]) == 1


def _n_components(n: int, edges: np.ndarray) -> int:
    """Connected components of ``n`` atoms joined by ``edges [E, 2]``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return int(connected_components(graph, directed=False)[0])
