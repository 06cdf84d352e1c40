"""The featurize stage shared by the QM9 molecule generators (PropMolFlow, SiLD).

Reads QM9 (embedded subset, qm9pack, or the original xyz archive) through :func:`molgen.data.qm9.load_qm9`,
perceives bonds and charges, applies EDM's split, and writes one :class:`~molgen.data.graph.GraphDataset` per
split plus the training SMILES (for novelty):

    featurize/generator.pt   the train half the generator learns from (Da by default)
    featurize/regressor.pt   the other half (Db): the property regressor's training set
    featurize/valid.pt, featurize/test.pt
    featurize/train_smiles.txt
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from molgen.data.graph import GraphDataset, MoleculeVocab
from molgen.errors import ConfigError
from molgen.runner import Stage, StageContext, say

PROPERTY_NAMES = ("alpha", "gap", "homo", "lumo", "mu", "Cv")
SPLIT_FILES = {"generator": "generator.pt", "regressor": "regressor.pt", "valid": "valid.pt", "test": "test.pt"}


def check_targets(cfg: DictConfig) -> None:
    """One line, before anything runs, when ``sample.ood`` or ``condition.value`` asks a target of a run that
    trains an unconditional generator (a checkpoint given with ``ckpt=`` is checked when the sample stage loads it)."""
    if cfg.get("ckpt") or cfg.condition.get("property"):
        return
    if cfg.sample.get("ood") or cfg.condition.get("value") is not None:
        raise ConfigError("sample.ood / condition.value need a conditional model (condition=gap, ...); "
                          "this run trains an unconditional one")


def sample_targets(cfg: DictConfig, property_name: str | None, sampler, generator) -> tuple[list[int], list[float] | None, str]:
    """The (N, target) pairs a QM9 generator's sample stage draws, and a line saying how.

    One protocol for every QM9 generator (PropMolFlow's): in distribution, (N, value) pairs from the training
    histograms; ``condition.value=X`` fixes the target and draws N from p(N | X); ``sample.ood=true`` is the
    out-of-distribution task (target = the training set's 99th percentile, N from the molecules above the 97th).
    ``sampler`` is the model's :class:`~molgen.conditioning.PropertySampler`; ``property_name`` None for an
    unconditional model, which refuses a target in one line.
    """
    ood, target = bool(cfg.sample.get("ood")), cfg.condition.get("value")
    if not property_name and (ood or target is not None):
        raise ConfigError("sample.ood / condition.value need a conditional checkpoint (this one is unconditional)")
    sizes, values = sampler.draw(int(cfg.sample.n), target, generator, ood=ood)
    if not property_name:
        mode = "unconditional"
    elif ood:
        mode = f"out of distribution (target = 99th percentile = {values[0]:.4g})"
    elif target is not None:
        mode = f"fixed target {float(target):.4g} (N from training molecules near it)"
    else:
        mode = "in distribution ((N, value) from the training histograms)"
    return sizes, values, mode


def load_split(ctx: StageContext, name: str, required: bool = True) -> GraphDataset | None:
    """One split written by the featurize stage (``generator.pt``, ``valid.pt``, ...); None if optional and absent."""
    path = ctx.input("featurize") / name
    if not path.exists() and not required:
        return None
    return GraphDataset.load(path)


def graph_loaders(train_set, val_set, batch_size: int, num_workers: int = 0):
    """PyG loaders for a training set (shuffled) and an optional validation set."""
    from torch_geometric.loader import DataLoader

    train = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=num_workers)
    val = DataLoader(val_set, batch_size=batch_size, shuffle=False, num_workers=num_workers) if val_set else None
    return train, val


def featurize_qm9(cfg: DictConfig, ctx: StageContext) -> dict:
    from molgen.data.qm9 import load_qm9

    data = load_qm9(cfg.data, progress=True)
    vocab = MoleculeVocab()
    metrics = dict(data.summary)
    for split, filename in SPLIT_FILES.items():
        mols = data.splits[split]
        usable = [m for m in mols if vocab.check(m) is None]
        if len(usable) < len(mols):
            metrics[f"{split}_outside_vocabulary"] = len(mols) - len(usable)
        GraphDataset.from_molecules(usable, vocab, PROPERTY_NAMES).save(ctx.dir / filename)
        metrics[f"{split}_molecules"] = len(usable)
        say(f"  {split}: {len(usable)} molecules -> {ctx.dir / filename}")
    (ctx.dir / "train_smiles.txt").write_text("\n".join(sorted(data.train_smiles)) + "\n")
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    section = [data.summary_markdown().strip(), "",
               f"Splits written (generator = train half '{data_cfg.get('generator_half', 'a')}'): "
               + ", ".join(f"{s} {metrics[f'{s}_molecules']}" for s in SPLIT_FILES), ""]
    (ctx.dir / "report.md").write_text("\n".join(section))
    return metrics


#: The featurize stage as every QM9 generator declares it (worker counts do not change the artifact).
FEATURIZE = Stage("featurize", featurize_qm9, groups=("data",), ignore_keys=("data.perception_processes",),
                  description="QM9 -> generator/regressor halves, valid, test (GraphDataset .pt) + training SMILES")
