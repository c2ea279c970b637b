"""`pvlens traits ...`: list, show, write (with an LLM), import and export trait specs."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path

import typer

from pvlens.cli.options import existing_file
from pvlens.io.atomic import write_json_atomic
from pvlens.traits import TraitSpec, TraitSpecError, builtin_traits, load_trait

app = typer.Typer(
    help="Trait specs: the built-in library, new traits written by an LLM, paper-format files.",
    no_args_is_help=True,
)


class ProviderName(str, Enum):
    anthropic = "anthropic"
    openai = "openai"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _check_writable(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise _fail(f"{path} already exists; pass --force to overwrite it")


@app.command("list")
def list_cmd() -> None:
    """List the built-in traits with their artifact counts."""
    rows = []
    for name in builtin_traits():
        s = load_trait(name)
        rows.append(
            (
                name,
                str(len(s.instructions)),
                f"{len(s.extraction_questions)}/{len(s.evaluation_questions)}",
                f"{len(s.exemplars.positive)}/{len(s.exemplars.negative)}",
                s.description,
            )
        )
    header = ("name", "pairs", "questions", "exemplars", "description")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        typer.echo("  ".join([*cells, row[4]]))


@app.command("show")
def show_cmd(
    trait: str = typer.Argument(..., help="Built-in name or a .json/.yaml trait file."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole spec as JSON."),
) -> None:
    """Show one trait: description, system prompts, question counts and rubric."""
    try:
        s = load_trait(trait)
    except TraitSpecError as e:
        raise _fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(s.model_dump(exclude_none=True), indent=2, ensure_ascii=False))
        return
    typer.echo(f"{s.name}: {s.description}\n")
    for i in range(len(s.instructions)):
        typer.echo(f"[{i}] pos: {s.system_prompt('pos', i)}")
        typer.echo(f"    neg: {s.system_prompt('neg', i)}")
    typer.echo(
        f"\nquestions: {len(s.extraction_questions)} extraction, "
        f"{len(s.evaluation_questions)} evaluation (e.g. {s.extraction_questions[0]!r})"
    )
    typer.echo(
        f"exemplars: {len(s.exemplars.positive)} positive, {len(s.exemplars.negative)} negative"
    )
    typer.echo(f"\nrubric:\n{s.rubric}")


@app.command("new")
def new_cmd(
    name: str = typer.Argument(..., help="Trait name, e.g. 'power_seeking'."),
    description: str = typer.Argument(..., help="One sentence defining the trait."),
    provider: ProviderName = typer.Option(ProviderName.anthropic, help="Which API writes it."),
    model: str | None = typer.Option(None, help="Model name (default depends on the provider)."),
    out: Path | None = typer.Option(None, help="Output .json/.yaml file (default: NAME.json)."),
    attempts: int = typer.Option(3, min=1, help="Replies to try; retries see what was wrong."),
    exemplars: int = typer.Option(40, min=0, help="Judge exemplars per side (0: none)."),
    questions: int = typer.Option(20, min=1, help="Questions per split (extraction, evaluation)."),
    pairs: int = typer.Option(5, min=1, help="Instruction pairs."),
    max_tokens: int = typer.Option(16000, min=256, help="Output token budget per reply."),
    temperature: float | None = typer.Option(
        None, help="Sampling temperature (default: the provider's)."
    ),
    base_url: str | None = typer.Option(None, help="API base URL (proxy or local server)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file."),
) -> None:
    """Write a new trait's artifacts with Claude or an OpenAI model (keys from the environment)."""
    from pvlens.traits.generate import GenerationConfig, GenerationError, generate_trait

    out = out or Path(f"{name}.json")
    _check_writable(out, force)
    config = GenerationConfig(
        provider=provider.value,
        model=model,
        n_pairs=pairs,
        n_questions=questions,
        n_exemplars=exemplars,
        attempts=attempts,
        max_tokens=max_tokens,
        temperature=temperature,
        base_url=base_url,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    gen_log = logging.getLogger("pvlens.traits.generate")
    gen_log.addHandler(handler)
    gen_log.setLevel(logging.INFO)
    try:
        spec = generate_trait(name, description, config)
    except GenerationError as e:
        raise _fail(str(e)) from None
    finally:
        gen_log.removeHandler(handler)
    spec.save(out)
    problems = spec.shape_problems(n_pairs=pairs, n_questions=questions, n_exemplars=exemplars)
    typer.echo(
        f"wrote {out}: {len(spec.instructions)} pairs, {len(spec.extraction_questions)}+"
        f"{len(spec.evaluation_questions)} questions, {len(spec.exemplars.positive)}+"
        f"{len(spec.exemplars.negative)} exemplars"
        + (f" ({'; '.join(problems)})" if problems else "")
    )
    typer.echo("Read it before use: the questions and rubric decide what the vector measures.")


@app.command("import-paper")
def import_paper_cmd(
    file: Path = typer.Argument(
        ..., help="Paper-format trait JSON (e.g. trait_data_extract/X.json)."
    ),
    out: Path = typer.Option(..., help="Output pvlens trait file (.json or .yaml)."),
    eval_file: Path | None = typer.Option(
        None, help="The matching trait_data_eval/X.json; without it FILE's questions are halved."
    ),
    name: str | None = typer.Option(None, help="Trait name (default: the file's stem)."),
    description: str | None = typer.Option(None, help="One-sentence description to record."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file."),
) -> None:
    """Convert the paper code's trait JSON ({instruction, questions, eval_prompt}) to a TraitSpec."""
    existing_file(file, "paper trait file")
    if eval_file is not None:
        existing_file(eval_file, "paper evaluation file")
    _check_writable(out, force)
    try:
        spec = TraitSpec.from_paper_files(file, eval_file=eval_file, name=name)
    except TraitSpecError as e:
        raise _fail(str(e)) from None
    if description:
        spec = spec.model_copy(update={"description": description})
    spec.save(out)
    typer.echo(
        f"wrote {out}: {len(spec.instructions)} pairs, {len(spec.extraction_questions)} extraction "
        f"+ {len(spec.evaluation_questions)} evaluation questions, no exemplars"
    )


@app.command("export-paper")
def export_paper_cmd(
    trait: str = typer.Argument(..., help="Built-in name or a .json/.yaml trait file."),
    out: Path = typer.Option(..., help="Output paper-format JSON."),
    eval_out: Path | None = typer.Option(
        None,
        help="Also write the evaluation split here; then OUT holds only the extraction split "
        "(the paper repo's trait_data_extract/ and trait_data_eval/ layout).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the output files."),
) -> None:
    """Write a trait in the paper code's format (exemplars and description are dropped)."""
    for path in (out, eval_out):
        if path is not None:
            _check_writable(path, force)
    try:
        spec = load_trait(trait)
    except TraitSpecError as e:
        raise _fail(str(e)) from None
    writes = [(out, "extract" if eval_out else "all")]
    if eval_out:
        writes.append((eval_out, "eval"))
    for path, split in writes:
        data = spec.to_paper_json(split=split)
        write_json_atomic(path, data)
        typer.echo(f"wrote {path} ({len(data['questions'])} questions)")
