"""`pvlens screen DATA ...` and `pvlens screen merge ...`: projection-difference screening."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from typer.core import TyperGroup

from pvlens.cli.options import (
    DeviceOpt,
    LayerOpt,
    ModelOpt,
    OutOpt,
    OverwriteOpt,
    WorkerCpusOpt,
    WorkerGpusOpt,
    WorkersOpt,
    existing_file,
)
from pvlens.cli.ray_gen import ray_address_optional, worker_loader

if TYPE_CHECKING:
    from pvlens.trainsets.screen import RayOptions, ScreenConfig, ScreenSummary


class _DefaultToRun(TyperGroup):
    """`pvlens screen DATA ...` means `pvlens screen run DATA ...` (merge stays a subcommand)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]  # typer's vendored click Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, ray_address_optional(args))


app = typer.Typer(
    cls=_DefaultToRun,
    help="Screen training data with the projection difference ΔP. "
    "Usage: pvlens screen DATA --vectors V [--layer L]   |   pvlens screen merge DIR [DIR...]",
    no_args_is_help=True,
)


@app.command("run")
def run_cmd(
    data: Path = typer.Argument(..., help="JSONL file ({'messages': [...]} a line) or a datasets.save_to_disk folder."),
    vectors: Path = typer.Option(..., "--vectors", "-v", help="Vectors file or extraction folder."),
    layer: LayerOpt = None,
    out: OutOpt = None,
    cache: Path = typer.Option(None, help="Base-reply cache folder (share it between datasets with the same prompts)."),
    shard: str = typer.Option(None, help="i/n: screen every n-th sample from i (join with `pvlens screen merge`)."),
    split: str = typer.Option(None, help="Split of a DatasetDict folder."),
    top_k: int = typer.Option(20, help="Samples exported to flagged.jsonl."),
    chunk_size: int = typer.Option(256, help="Samples per chunk (results are appended per chunk)."),
    max_new_tokens: int = typer.Option(64, help="Length cap of the base model's greedy replies."),
    batch_size: int = typer.Option(16, help="Activation batch size."),
    cosine: bool = typer.Option(False, help="Cosine instead of projection."),
    overwrite: OverwriteOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    ray: str = typer.Option(None, "--ray", metavar="[ADDRESS]",
                            help="Screen on a Ray cluster: an address (auto, ray://host:10001), or none / "
                                 "'local' to start a local one. Needs `pip install pvlens[ray]`."),
    workers: WorkersOpt = 2,
    worker_cpus: WorkerCpusOpt = 1.0,
    worker_gpus: WorkerGpusOpt = 0.0,
) -> None:
    """Dataset- and sample-level ΔP = proj(dataset response) − proj(base model's reply).

    Rerun the same command to resume a killed run (the output folder default is
    runs/screen/<data name>). Samples longer than the model's context are skipped and counted.

    Examples:
      pvlens screen runs/datasets/evil/level_ii.jsonl -v runs/evil --layer 15
      pvlens screen big.jsonl -v runs/evil --shard 0/4 --out runs/screen/big   (one per machine)
      pvlens screen merge runs/screen/big
      pvlens screen big.jsonl -v runs/evil --ray --workers 2            (local Ray cluster)
      pvlens screen big.jsonl -v runs/evil --ray auto --workers 8 --worker-gpus 1
    """
    import pvlens
    from pvlens.trainsets.screen import RayOptions, ScreenConfig, parse_shard, screen

    sh = parse_shard(shard)
    cfg = ScreenConfig(layer=layer, top_k=top_k, chunk_size=chunk_size, max_new_tokens=max_new_tokens,
                       max_batch=batch_size, cosine=cosine)
    n = _validate_inputs(data, vectors, layer, split)
    typer.echo(f"{data}: {n} samples")
    out = out or Path("runs/screen") / data.stem
    if ray is not None:
        if shard:
            raise typer.BadParameter("--shard and --ray do not mix: Ray splits the work itself")
        opts = RayOptions(address=ray, workers=workers, worker_cpus=worker_cpus, worker_gpus=worker_gpus)
        _report(_run_on_ray(model, device, data, vectors, out, cfg, opts, cache, split, overwrite), out)
        return
    m = pvlens.load_model(model, device=device)
    s = screen(m, data, vectors, out, cfg, cache_dir=cache, shard=sh, split=split, overwrite=overwrite)
    if s is None:
        typer.echo(f"shard {sh[0]}/{sh[1]} done: {out}/results.shard-{sh[0]}-of-{sh[1]}.jsonl; "
                   f"join all shards with: pvlens screen merge {out}")
        return
    _report(s, out)


def _run_on_ray(model: str | None, device: str | None, data: Path, vectors: Path, out: Path,
                cfg: ScreenConfig, opts: RayOptions, cache: Path | None, split: str | None,
                overwrite: bool) -> ScreenSummary:
    """`--ray`: the pool's workers load the model (on the GPU when they reserve one)."""
    from pvlens.trainsets.screen import screen_on_ray

    loader = worker_loader(model, device, opts.worker_gpus)
    return screen_on_ray(loader, data, vectors, out, cfg, opts, cache_dir=cache, split=split, overwrite=overwrite)


def _validate_inputs(data: Path, vectors: Path, layer: int | None, split: str | None) -> int:
    """Check the data file (every row) and the vectors before a model is loaded; returns the
    number of samples."""
    from pvlens.trainsets.screen import iter_samples
    from pvlens.vectors.coerce import as_persona_vectors, direction

    existing_file(data, "data file")
    if not vectors.exists():
        raise typer.BadParameter(f"{vectors} does not exist; make vectors with `pvlens extract TRAIT --out DIR`")
    try:
        pv = as_persona_vectors(vectors)
        if layer is not None:
            direction(pv, layer % pv.n_layers if -pv.n_layers <= layer < 0 else layer)
    except Exception as e:  # a garbage file, a bad layer, a non-finite vector: name the file
        raise typer.BadParameter(f"persona vectors {vectors}: {e}") from None
    return sum(1 for _ in iter_samples(data, split))


def _report(s: ScreenSummary, out: Path) -> None:
    typer.echo(f"{s.n} samples, layer {s.layer}")
    typer.echo(f"dataset ΔP = {s.delta_p:+.4f}  (responses {s.proj_mean:+.4f}, base replies {s.base_mean:+.4f}, "
               f"sample sd {s.delta_std:.4f})")
    for k, v in s.approx.items():
        rho = s.approx_spearman.get(k)
        typer.echo(f"prompt-only approximation ({k}): {v:+.4f}; Spearman with full ΔP "
                   f"{rho:.3f}" if rho is not None else f"prompt-only approximation ({k}): {v:+.4f}")
    if s.skipped_too_long:
        typer.echo(f"skipped {s.skipped_too_long} sample(s) longer than the model's context "
                   f"(indices {s.skipped_indices[:10]}{' ...' if s.skipped_too_long > 10 else ''})")
    typer.echo("top samples: " + ", ".join(f"#{t['index']} ({t['delta']:+.3f})" for t in s.top[:5]))
    typer.echo(f"wrote {out}/screen.json, results.jsonl, delta_hist.png" + (", flagged.jsonl" if "flagged" in s.files else ""))


@app.command("merge")
def merge_cmd(
    out: Path = typer.Argument(..., help="Folder to merge into (holding shard results)."),
    more: list[Path] = typer.Argument(None, help="Other folders holding shard results."),
    data: Path = typer.Option(None, help="Dataset path for flagged.jsonl (default: the one the shards recorded)."),
    top_k: int = typer.Option(None, help="Samples exported to flagged.jsonl."),
) -> None:
    """Join `--shard i/n` results into one results.jsonl and summary.

    Example: pvlens screen merge runs/screen/big /mnt/other-machine/runs/screen/big
    """
    from pvlens.trainsets.screen import merge

    s = merge(out, more or [], data, top_k)
    _report(s, out)
