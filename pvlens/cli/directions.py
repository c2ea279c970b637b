"""`pvlens vectors directions | compare-directions | ablate-weights` and `pvlens off-target`:
other direction methods, weight-level ablation and the off-target matrix (docs/directions.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pvlens.cli.options import DeviceOpt, LayerOpt, ModelOpt, SeedOpt, existing_file, float_list
from pvlens.errors import InputError

if TYPE_CHECKING:
    from pvlens.vectors.persona import PersonaVectors

DIRECTIONS_OUT = Path("results/directions")
OFF_TARGET_OUT = Path("results/off_target")
SHIPPED_EVIL_ROLLOUTS = Path("sae/corpus/evil-rollouts.jsonl")
"""The rollouts the shipped evil vector was extracted from (committed with the repository)."""


def _methods(values: list[str] | None) -> list[str]:
    from pvlens.vectors.directions import check_methods

    return check_methods(values or ["pca", "probe"])


def directions_cmd(
    vectors: Annotated[str, typer.Argument(help="Vectors file, extraction folder, or a shipped trait name.")],
    rollouts: Annotated[Path, typer.Option(help="The extraction's rollouts.jsonl (kept pairs are re-read, not regenerated).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Vectors file to write (the input's tensors + the new methods).")],
    method: Annotated[list[str] | None, typer.Option("--method", help="pca | probe (repeatable; default both).")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
) -> None:
    """Add PCA-of-differences and logistic-probe directions to a vectors file, from its own rollouts
    (one forward pass per kept reply; refuses rollouts that do not reproduce the mean difference).

    Example: pvlens vectors directions evil --rollouts sae/corpus/evil-rollouts.jsonl --out evil-all.safetensors
    """
    from pvlens.core.model import load_model
    from pvlens.vectors.coerce import as_persona_vectors
    from pvlens.vectors.directions_run import add_directions

    methods = _methods(method)
    existing_file(rollouts, "--rollouts")
    vecs = as_persona_vectors(vectors)
    result = add_directions(load_model(model, device=device), vecs, rollouts, methods, seed=seed)
    result.save(out)
    typer.echo(f"wrote {out}: reductions {sorted(result.tensors)} (select one with --reduction, "
               f"e.g. response_avg:pca); {result.metadata['methods']['n_pairs']} pairs")


def compare_directions_cmd(
    trait: Annotated[str, typer.Option(help="Trait with a hand-written eval set (evil, sycophantic, hallucinating).")] = "evil",
    vectors: Annotated[str | None, typer.Option(
        help="Vectors (file/folder/shipped name) whose rollouts are --rollouts (default: an extraction "
             "folder given as --rollouts' folder, else the shipped vector of --trait).")] = None,
    rollouts: Annotated[Path | None, typer.Option(
        help="The rollouts the vectors were extracted from (default for evil: the shipped vector's, "
             f"{SHIPPED_EVIL_ROLLOUTS}).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <trait>.json and <trait>.safetensors.")] = DIRECTIONS_OUT,
    alphas: Annotated[str, typer.Option(help="Comma-separated steering strengths (0 = unsteered).")] = "0,4,8",
    questions: Annotated[int, typer.Option(help="Evaluation questions for steering.")] = 20,
    samples: Annotated[int, typer.Option(help="Answers per question and α.")] = 2,
    layer: LayerOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
) -> None:
    """Mean difference vs PCA of differences vs logistic probe from the same rollouts: AUROC on the
    hand-written set (with a random-direction null) and steering dose-response (offline judge).

    Examples:
      pvlens vectors compare-directions --trait evil   (writes results/directions/evil.json)
      pvlens extract sycophantic --samples 3 --out runs/syc
      pvlens vectors compare-directions --trait sycophantic --rollouts runs/syc/rollouts.jsonl
    """
    from pvlens.core.model import load_model
    from pvlens.io.atomic import write_json_atomic
    from pvlens.judges import load_judge
    from pvlens.vectors.coerce import as_persona_vectors
    from pvlens.vectors.directions_compare import DirectionsConfig, compare_directions
    from pvlens.vectors.directions_run import load_or_add_directions

    rollouts, vectors = comparison_sources(trait, rollouts, vectors)
    existing_file(rollouts, "--rollouts")
    cfg = DirectionsConfig(layer=layer, alphas=float_list(alphas, "--alphas") or [0.0], n_questions=questions,
                           samples=samples, seed=seed)
    m = load_model(model, device=device)
    vecs = load_or_add_directions(m, as_persona_vectors(vectors), rollouts, out / f"{trait}.safetensors", seed=seed)
    result = compare_directions(m, vecs, trait, load_judge("offline", trait=trait), cfg, rollouts)
    if vectors != trait:  # another extraction of a shipped trait: how close it is to the shipped vector
        result["shipped_cosine"] = shipped_cosine(vecs, trait, result["layer"])
    result["command"] = (f"pvlens vectors compare-directions --trait {trait} --vectors {vectors} --rollouts {rollouts} "
                         f"--alphas {alphas} --questions {questions} --samples {samples}")
    write_json_atomic(out / f"{trait}.json", result)
    typer.echo(f"wrote {out / f'{trait}.json'}")


def shipped_cosine(vecs: PersonaVectors, trait: str, layer: int) -> float | None:
    """Cosine at `layer` of a file's mean difference with the shipped vector of `trait` (None: none ships)."""
    import torch

    from pvlens.vectors.coerce import as_persona_vectors

    try:
        shipped = as_persona_vectors(trait)
    except (InputError, FileNotFoundError, ValueError):
        return None
    mine, ref = vecs.tensors["response_avg"][layer], shipped.tensors["response_avg"][layer]
    return round(float(torch.nn.functional.cosine_similarity(mine, ref, dim=0)), 4)


def comparison_sources(trait: str, rollouts: Path | None, vectors: str | None) -> tuple[Path, str]:
    """(rollouts, vectors) of a comparison: the shipped evil pair by default, an extraction folder's
    own vectors for its rollouts.jsonl; any other trait must name its rollouts."""
    if rollouts is None:
        if trait != "evil":
            raise InputError(
                f"the rollouts of the shipped {trait!r} vector are not in the repository; extract one with "
                f"`pvlens extract {trait} --samples 3 --out runs/{trait}` and pass "
                f"--rollouts runs/{trait}/rollouts.jsonl"
            )
        rollouts = SHIPPED_EVIL_ROLLOUTS
    if vectors is None:
        folder = rollouts.parent
        vectors = str(folder) if (folder / "vectors.safetensors").exists() else trait
    return rollouts, vectors


def ablate_weights_cmd(
    vectors: Annotated[str, typer.Argument(help="Vectors file, extraction folder, or a shipped trait name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder (ablated.safetensors + ablation.json).")],
    layer: LayerOpt = None,
    reduction: Annotated[str | None, typer.Option(help="Which tensor of the file (default: response_avg).")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Project one layer's direction out of every residual-writing weight (W_E, W_pos, W_O, W_out,
    b_O, b_out) and save the changed tensors; load with
    `pvlens.core.weight_ablation.load_ablated(pvlens.load_model(BASE), OUT)`.

    Example: pvlens vectors ablate-weights evil --out runs/evil-ablated
    """
    from pvlens.core.config import default_layer
    from pvlens.core.model import load_model
    from pvlens.core.weight_ablation import ablate_direction_in_weights, save_ablated
    from pvlens.vectors.coerce import direction

    base = load_model(model, device=device)
    at = default_layer(base) if layer is None else layer
    v = direction(vectors, at, reduction)
    ablated = ablate_direction_in_weights(base, v)
    save_ablated(ablated, base, out, {"vectors": vectors, "layer": at, "reduction": reduction or "response_avg",
                                      "model": model or "default"})
    typer.echo(f"wrote {out} (TransformerLens tensors; load with load_ablated(load_model({model!r}), {str(out)!r}))")


def off_target_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.json.")] = OFF_TARGET_OUT,
    traits: Annotated[str, typer.Option(help="Comma-separated steered traits (shipped vectors).")] = "evil,sycophantic,hallucinating",
    alpha: Annotated[float, typer.Option(help="Steering strength (raw-vector units).")] = 8.0,
    questions: Annotated[int, typer.Option(help="Evaluation questions per steered trait, pooled.")] = 8,
    samples: Annotated[int, typer.Option(help="Answers per question.")] = 1,
    mc: Annotated[int | None, typer.Option(help="First N built-in MC questions (default: all).")] = None,
    layer: LayerOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
) -> None:
    """Steer along each trait and judge every built-in trait, coherence, MC accuracy and perplexity.

    Example: pvlens off-target --alpha 8   (writes results/off_target/results.json)
    """
    from pvlens.core.model import load_model
    from pvlens.io.atomic import write_json_atomic
    from pvlens.vectors.off_target import OffTargetConfig, off_target

    steered = [t.strip() for t in traits.split(",") if t.strip()]
    if not steered:
        raise InputError("--traits needs at least one trait, e.g. --traits evil")
    cfg = OffTargetConfig(steered=steered, alpha=alpha, layer=layer, questions_per_trait=questions,
                          samples=samples, mc_questions=mc, seed=seed)
    result = off_target(load_model(model, device=device), cfg)
    result["command"] = (f"pvlens off-target --traits {traits} --alpha {alpha:g} --questions {questions} "
                         f"--samples {samples}" + (f" --mc {mc}" if mc else ""))
    write_json_atomic(out / "results.json", result)
    typer.echo(f"wrote {out / 'results.json'}")
