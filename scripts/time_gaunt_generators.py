"""Seconds per training step of molgen's generators with the Gaunt backbone against their default networks.

Builds each model exactly as its train stage does (the composed config, the featurized generator split), then
times full optimisation steps (forward + backward + optimizer) on the same batches, the variants interleaved
step by step so that load changes on a shared machine hit both alike. Prints the median per variant and the
ratio to the default, and the parameter counts.

    OMP_NUM_THREADS=1 python scripts/time_gaunt_generators.py --featurized RUN/featurize --steps 20
    OMP_NUM_THREADS=1 python scripts/time_gaunt_generators.py --pipeline sild [--phase diffusion] --featurized RUN/featurize

``--featurized`` is a featurize stage folder of either pipeline (``molgen run pipeline=propmolflow
stage=featurize``); extra arguments are Hydra overrides applied to every variant (e.g. ``model.s_dim=32``).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

VARIANTS = {"propmolflow": ("model/backbone", ("gvp_small", "gaunt")), "sild": ("model/encoder", ("egnn", "gaunt"))}


def build(pipeline: str, overrides: list[str], featurized: Path, phase: str = "autoencoder"):
    """(model, train loader, step function) for one variant, built as the pipeline's train stage builds it."""
    from torch_geometric.loader import DataLoader

    from molgen.config import compose
    from molgen.data.graph import GraphDataset

    cfg = compose([f"pipeline={pipeline}", *overrides])
    data = GraphDataset.load(featurized / "generator.pt")
    torch.manual_seed(int(cfg.seed))
    if pipeline == "propmolflow":
        from molgen.models.propmolflow.model import WithProperty
        from molgen.pipelines.propmolflow import build_model_args
        from molgen.spec import build as build_spec

        model = build_spec(build_model_args(cfg, data))
        loader = DataLoader(WithProperty(data, None), batch_size=int(cfg.trainer.batch_size), shuffle=False)
        loss_fn = lambda batch: model(batch)["loss"]  # noqa: E731
    else:
        from molgen.pipelines.sild import _phase_config, model_arguments
        from molgen.spec import build as build_spec

        model = build_spec(model_arguments(cfg, data)[0])
        model.set_phase(phase)  # autoencoder: the encoder trains; diffusion: it only encodes (no gradient)
        batch_size = int(_phase_config(dict(cfg.trainer), phase)["batch_size"])
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        loss_fn = ((lambda batch: model.autoencoder_losses(batch)["loss"]) if phase == "autoencoder"  # noqa: E731
                   else model.diffusion_loss)
    model.hparams.lr = 1e-3
    opt = model.configure_optimizers()
    model.train()

    def step(batch) -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = loss_fn(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, loss.item()

    return model, loader, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", choices=sorted(VARIANTS), default="propmolflow")
    ap.add_argument("--featurized", type=Path, required=True, help="a featurize stage folder (generator.pt)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 2 warm-up steps)")
    ap.add_argument("--phase", choices=("autoencoder", "diffusion"), default="autoencoder", help="SiLD's phase")
    args, overrides = ap.parse_known_args()
    torch.set_num_threads(1)
    key, names = VARIANTS[args.pipeline]
    runs = {name: build(args.pipeline, [f"{key}={name}", *overrides], args.featurized, args.phase) for name in names}
    batches = []
    for batch in runs[names[0]][1]:  # identical data and order for every variant
        batches.append(batch)
        if len(batches) == args.steps + 2:
            break
    times: dict[str, list[float]] = {n: [] for n in names}
    losses: dict[str, list[float]] = {n: [] for n in names}
    for k, batch in enumerate(batches):
        for name in names:
            torch.manual_seed(k)  # the same noise draws (t, prior, masks) for both variants
            seconds, loss = runs[name][2](batch)
            if k >= 2:
                times[name].append(seconds)
            losses[name].append(loss)
    base = statistics.median(times[names[0]])
    what = f"{args.pipeline} ({args.phase} phase)" if args.pipeline == "sild" else args.pipeline
    print(f"{what}: {len(batches) - 2} timed steps per variant, batch of "
          f"{batches[0].num_graphs} molecules ({batches[0].num_nodes} atoms), {torch.get_num_threads()} thread(s)")
    part = "net.trunk" if args.pipeline == "propmolflow" else "encoder"
    print(f"| variant | parameters (of which {part}) | median s/step | ratio | first loss | last loss | finite |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        model = runs[name][0]
        med = statistics.median(times[name])
        finite = all(torch.isfinite(torch.tensor(losses[name])).tolist())
        n_part = sum(p.numel() for p in model.get_submodule(part).parameters())
        print(f"| {key}={name} | {sum(p.numel() for p in model.parameters()):,} ({n_part:,}) | {med:.3f} | "
              f"{med / base:.2f}x | "
              f"{losses[name][0]:.3f} | {losses[name][-1]:.3f} | {finite} |")


if __name__ == "__main__":
    main()
