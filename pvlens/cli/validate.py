"""`pvlens validate`: shipped persona vectors on the hand-written evaluation sets, against a null
of random directions; `pvlens validate --report` regenerates docs/validation.md's tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pvlens.cli.options import DeviceOpt, JudgeOpt, ModelOpt, OverwriteOpt, SeedOpt, int_list

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from pvlens.vectors.elicited import ElicitedSet
    from pvlens.vectors.validation_run import LayerValidation

DEFAULT_OUT = Path("results/validation")
DEFAULT_DOC = Path("docs/validation.md")


def _vectors_from(folder: Path) -> dict[str, Path]:
    """{trait: path} of `<folder>/<trait>.safetensors` or `<folder>/<trait>/` for each eval trait."""
    from pvlens.vectors.validate import EVAL_TRAITS

    found = {}
    for trait in EVAL_TRAITS:
        for candidate in (folder / f"{trait}.safetensors", folder / trait):
            if candidate.exists():
                found[trait] = candidate
                break
        else:
            raise typer.BadParameter(f"--vectors {folder} has no {trait}.safetensors or {trait}/ run folder")
    return found


def validate_cmd(
    layers: str = typer.Option(None, "--layers", "-l", help="Blocks to validate, e.g. 12,15,18 (default: the middle block)."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Folder for <layer>.json and <layer>.png."),
    n_null: int = typer.Option(200, "--null", help="Random unit directions in the null."),
    n_bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the 95 % intervals."),
    seed: SeedOpt = 0,
    vectors: Path = typer.Option(None, "--vectors", help="Folder with <trait>.safetensors or <trait>/ runs (default: the shipped vectors)."),
    report: bool = typer.Option(False, "--report", help="Only regenerate the tables of --doc and the PNGs from the JSON in --out."),
    doc: Path = typer.Option(DEFAULT_DOC, "--doc", help="Docs page whose generated tables --report rewrites."),
    elicit: bool = typer.Option(False, "--elicit", help="Also build and measure prompt-elicited sets (trait system prompts, no steering, judged)."),
    judge: JudgeOpt = "offline",
    model: ModelOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """AUROC (trait vs clean answer) of each trait's vector on each hand-written set, with bootstrap
    intervals and the percentile among random directions.

    Examples:
      pvlens validate --layers 12,15,18
      pvlens validate --report            (rewrite docs/validation.md's tables from results/validation)
    """
    if report:
        _report(out, doc)
        return
    layer_list = int_list(layers, "--layers")
    named = _vectors_from(vectors) if vectors is not None else None
    _run(layer_list, out, n_null, n_bootstrap, seed, named, model, device, overwrite, judge if elicit else None)


def _report(out: Path, doc: Path) -> None:
    from pvlens.vectors.validation_report import load_results, plot_layer, update_doc

    results = load_results(out)
    if not results:
        raise typer.BadParameter(f"{out} holds no <layer>.json results; run `pvlens validate` first")
    update_doc(doc, results)
    for r in results:
        plot_layer(r, out / f"{r.layer}.png")
        plot_layer(r, doc.parent / "img" / "validation" / f"{r.layer}.png")
    typer.echo(f"rewrote the tables of {doc} and the PNGs from {len(results)} result file(s) in {out}")


def _run(
    layers: list[int] | None, out: Path, n_null: int, n_bootstrap: int, seed: int,
    vectors: dict[str, Path] | None, model: str | None, device: str | None, overwrite: bool,
    judge: str | None,
) -> None:
    import pvlens
    from pvlens.core.config import default_layer
    from pvlens.core.fingerprint import file_hash, model_fingerprint
    from pvlens.io.runs import check_inputs, run_lock
    from pvlens.vectors.validate import EVAL_TRAITS, eval_set_path
    from pvlens.vectors.validation_report import save_layer
    from pvlens.vectors.validation_run import ValidationConfig, run_validation

    cfg = ValidationConfig(n_null=n_null, n_bootstrap=n_bootstrap, seed=seed)
    m = pvlens.load_model(model, device=device)
    layers = layers or [default_layer(m)]
    inputs = {"model": model_fingerprint(m), "config": cfg.model_dump(),
              "data": {t: file_hash(eval_set_path(t)) for t in EVAL_TRAITS},
              "vectors": {k: str(v) for k, v in (vectors or {}).items()}, "elicit_judge": judge}
    with run_lock(out):
        check_inputs(out, inputs, overwrite=overwrite)
        elicited, setup = _elicited(m, out, judge, overwrite) if judge else (None, None)
        results = run_validation(m, layers, cfg, vectors=vectors, model_name=model or "default",
                                 elicited=elicited, elicited_setup=setup)
        for r in results:
            json_path, png_path = save_layer(r, out)
            typer.echo(f"layer {r.layer}: wrote {json_path} and {png_path}")
            _echo_summary(r)


def _elicited(
    m: HookedTransformer, out: Path, judge_kind: str, overwrite: bool
) -> tuple[dict[str, ElicitedSet], dict[str, object]]:
    """Prompt-elicited sets of every eval trait, cached in out/elicited/<trait>/."""
    from pvlens.judges import load_judge
    from pvlens.traits import load_trait
    from pvlens.vectors.elicited import ElicitConfig, load_or_elicit
    from pvlens.vectors.validate import EVAL_TRAITS

    cfg = ElicitConfig()
    sets: dict[str, ElicitedSet] = {}
    judges: dict[str, object] = {}
    for trait in EVAL_TRAITS:
        spec = load_trait(trait)
        judge = load_judge(judge_kind, trait=spec)
        sets[trait] = load_or_elicit(m, spec, judge, out / "elicited" / trait, cfg, overwrite)
        judges[trait] = judge.describe()
        typer.echo(f"elicited {trait}: pass rate pos {sets[trait].pass_rate_pos:.2f}, neg {sets[trait].pass_rate_neg:.2f}")
    return sets, {"config": cfg.model_dump(), "judges": judges}


def _echo_summary(r: LayerValidation) -> None:
    for reduction, sets in r.results.items():
        for name, res in sets.items():
            own = res.cells.get(name)
            if own is not None:
                typer.echo(f"  {reduction:12s} {name:14s} own AUROC {own.auroc:.3f} "
                           f"[{own.ci95[0]:.3f}, {own.ci95[1]:.3f}], null p95 {res.null.p95:.3f}, "
                           f"percentile {own.null_percentile:.1f}")
