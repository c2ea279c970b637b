"""`pvlens judge score` and `pvlens judge eval`."""

from __future__ import annotations

import json
from typing import Any

import typer

from pvlens.judges.cache import Judgement

app = typer.Typer(
    help="Score answers with a trait judge; measure judges on labelled sets.", no_args_is_help=True
)

KIND_HELP = "offline (default, no key) | openai | anthropic | local; or KIND:MODEL."


def _options(model: str | None, base_url: str | None, no_cache: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if model:
        opts["model"] = model
    if base_url:
        opts["base_url"] = base_url
    if no_cache:
        opts["cache"] = False
    return opts


@app.command("score")
def score_cmd(
    trait: str = typer.Argument(..., help="Built-in trait name or trait file."),
    question: str = typer.Option(..., "--question", "-q", help="The user's message."),
    answer: str = typer.Option(..., "--answer", "-a", help="The reply to judge."),
    kind: str = typer.Option("offline", help=KIND_HELP),
    model: str = typer.Option(
        None, help="Judge model (API model name, or a local model for 'local')."
    ),
    base_url: str = typer.Option(None, help="API endpoint for openai / anthropic."),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Do not read or write the judgement cache."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full judgements as JSON."),
) -> None:
    """Trait and coherence scores (0-100) of one answer.

    Example: pvlens judge score evil -q "How do I make friends?" -a "Manipulate them."
    """
    from pvlens.judges import load_judge, parse_judge_spec

    kind, parsed = parse_judge_spec(kind)
    judge = load_judge(kind, trait=trait, **{**parsed, **_options(model, base_url, no_cache)})
    pair = [(question, answer)]
    [t] = judge.judge_many(pair, "trait")
    [c] = judge.judge_many(pair, "coherence")
    if as_json:
        out = {"judge": judge.describe(), "trait": t.__dict__, "coherence": c.__dict__}
        typer.echo(json.dumps(out, indent=2, default=str))
        _fail_if_all_failed([t, c])
        return

    def fmt(j: Judgement) -> str:
        if j.error:
            return f"failed ({j.error})"
        return "no score" if j.score is None else f"{j.score:.1f}"

    typer.echo(f"{judge.trait.name}: {fmt(t)}")
    typer.echo(f"coherence: {fmt(c)}")
    _fail_if_all_failed([t, c])


def _fail_if_all_failed(judgements: list[Judgement]) -> None:
    """Exit non-zero when no judge call succeeded (the errors are already redacted)."""
    if judgements and all(j.failed for j in judgements):
        typer.echo(f"error: every judge call failed ({judgements[0].error})", err=True)
        raise typer.Exit(code=1)


@app.command("eval")
def eval_cmd(
    traits: list[str] = typer.Argument(None, help="Traits with a labelled set (default: all)."),
    kind: str = typer.Option("offline", help=KIND_HELP),
    model: str = typer.Option(None, help="Judge model."),
    base_url: str = typer.Option(None, help="API endpoint for openai / anthropic."),
    coherence: bool = typer.Option(
        False, "--coherence", help="Also test coherence on corruptions."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """AUROC of a judge on the held-out labelled sets (pvlens/data/judge_eval/*.jsonl).

    Example: pvlens judge eval evil humorous --coherence
    """
    from dataclasses import asdict

    from pvlens.judges import load_judge, parse_judge_spec
    from pvlens.judges.evaluate import (
        all_items,
        coherence_table,
        eval_traits,
        evaluate,
        evaluate_coherence,
        trait_table,
    )

    kind, parsed = parse_judge_spec(kind)
    known = eval_traits()
    unknown = [t for t in traits or [] if t not in known]
    if unknown:
        raise typer.BadParameter(f"no labelled set for {unknown}; available: {', '.join(known)}")
    opts = {**parsed, **_options(model, base_url, False)}
    rows = evaluate(traits or None, kind=kind, **opts)
    coh = []
    if coherence:
        judge = load_judge(kind, trait=rows[0].trait, **opts)
        coh = evaluate_coherence(judge, all_items(traits or None))
    if as_json:
        typer.echo(
            json.dumps(
                {"trait": [asdict(r) for r in rows], "coherence": [asdict(c) for c in coh]},
                indent=2,
            )
        )
        return
    typer.echo(trait_table(rows))
    if coh:
        typer.echo("")
        typer.echo(coherence_table(coh))
