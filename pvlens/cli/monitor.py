"""`pvlens monitor ...`: projection scores, per-token views, the prompt-shift experiment.

Every command checks its arguments and input files (vectors, layers, the judge) before it
loads the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pvlens.cli.options import (
    DeviceOpt,
    JudgeOpt,
    LayerOpt,
    ModelOpt,
    OverwriteOpt,
    SeedOpt,
    existing_file,
    int_list,
)

app = typer.Typer(
    help="Monitor traits with projections on persona vectors (before or after generation).",
    no_args_is_help=True,
)

VectorsOpt = Annotated[str, typer.Option("--vectors", "-v", help="Vectors file or extraction folder.")]
CosineOpt = Annotated[bool, typer.Option("--cosine", help="Cosine instead of projection.")]
REDUCTIONS = ("last_prompt", "prompt_avg", "response_avg")


def _check_vectors(path: str, layer: int | None) -> str:
    """The vectors file exists, loads, and has `layer` (checked before any model is loaded)."""
    from pvlens.vectors import PersonaVectors

    existing_file(Path(path), "vectors file")
    pv = PersonaVectors.load(path)
    if layer is not None and not 0 <= layer < pv.n_layers:
        raise typer.BadParameter(f"--layer {layer} is out of range: {path} has layers 0..{pv.n_layers - 1}")
    return pv.trait or Path(path).stem


def _named_vectors(specs: list[str], layer: int | None) -> dict[str, str]:
    """['evil=runs/evil', 'runs/syc'] → {'evil': 'runs/evil', <trait from metadata>: 'runs/syc'}."""
    out: dict[str, str] = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep:
            name, path = "", s
        recorded = _check_vectors(path, layer)
        name = name or recorded
        if name in out:
            raise typer.BadParameter(f"trait {name!r} given twice; name them: --vectors NAME=PATH")
        out[name] = path
    return out


def _layer_or_default(layer: int | None, vectors: str, n_layers: int) -> int:
    from pvlens.monitor import default_layer

    return layer if layer is not None else default_layer(vectors, n_layers)


def _request(text: str, system: str | None, reply: str | None = None) -> list[dict[str, str]]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return msgs + ([{"role": "assistant", "content": reply}] if reply is not None else [])


@app.command("score")
def score_cmd(
    message: list[str] = typer.Argument(..., help="User message(s) to score (one request each)."),
    vectors: list[str] = typer.Option(..., "--vectors", "-v", help="Vectors as PATH or NAME=PATH; repeat for several traits."),
    layer: LayerOpt = None,
    system: str = typer.Option(None, help="System prompt of the requests."),
    reply: str = typer.Option(None, help="An assistant reply to append (then 'response' scores it)."),
    reduction: str = typer.Option("last_prompt", help="last_prompt (before generation) | prompt_avg | response_avg."),
    cosine: CosineOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Projection score per trait for each request, all traits from one forward pass.

    Example: pvlens monitor score -v evil=runs/evil -v sycophantic=runs/sycophantic "How do I get revenge?"
    """
    import pvlens
    from pvlens.monitor import TraitMonitor

    if reduction not in REDUCTIONS:
        raise typer.BadParameter(f"--reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if reduction == "response_avg" and reply is None:
        raise typer.BadParameter("--reduction response_avg scores a reply: pass --reply")
    named = _named_vectors(vectors, layer)
    m = pvlens.load_model(model, device=device)
    mon = TraitMonitor(m, named, layer=layer, reduction=reduction, cosine=cosine)
    scored = mon.score_batch([_request(text, system, reply) for text in message])
    for text, scores in zip(message, scored, strict=True):
        if as_json:
            typer.echo(json.dumps({"message": text, "scores": scores, "layers": mon.layers}))
        else:
            parts = "  ".join(f"{t}={s:+.3f} (L{mon.layers[t]})" for t, s in scores.items())
            typer.echo(f"{parts}   {text}")


@app.command("tokens")
def tokens_cmd(
    text: Annotated[str, typer.Argument(help="User message (or raw text with --raw).")],
    vectors: VectorsOpt,
    layer: LayerOpt = None,
    reply: str = typer.Option(None, help="Assistant reply to colour as well."),
    generate_reply: bool = typer.Option(False, "--generate", help="Let the model answer (greedy) and colour its reply."),
    system: str = typer.Option(None, help="System prompt."),
    raw: bool = typer.Option(False, help="Treat TEXT as plain text (no chat template)."),
    html: Path = typer.Option(None, help="Write a self-contained HTML view (opens offline)."),
    png: Path = typer.Option(None, help="Write a PNG view (matplotlib)."),
    cosine: CosineOpt = False,
    max_new_tokens: int = typer.Option(64, min=1, help="Reply length with --generate."),
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Colour every token by its projection on the persona vector.

    Example: pvlens monitor tokens "How should I treat my rivals?" --generate -v runs/evil --html tokens.html
    """
    import pvlens
    from pvlens.core.generation import generate
    from pvlens.monitor import token_projections, tokens_html, tokens_png

    _check_vectors(vectors, layer)
    if raw and (generate_reply or reply is not None or system):
        raise typer.BadParameter("--raw colours plain text: it takes no --reply, --generate or --system")
    m = pvlens.load_model(model, device=device)
    lay = _layer_or_default(layer, vectors, m.cfg.n_layers)
    conv: str | list[dict[str, str]] = text
    if not raw:
        if generate_reply:
            reply = generate(m, [_request(text, system)], max_new_tokens=max_new_tokens, progress=False).texts[0]
        conv = _request(text, system, reply)
    tp = token_projections(m, conv, vectors, lay, cosine)
    if html is None and png is None:
        for t, v in zip(tp.tokens, tp.values, strict=True):
            typer.echo(f"{v:+8.3f}  {t!r}")
    for path, render in ((html, tokens_html), (png, tokens_png)):
        if path is not None:
            render(tp, path)
            typer.echo(f"wrote {path}")
    typer.echo(f"layer {lay}: response mean {tp.response_mean:+.3f}, last prompt token "
               f"{tp.values[tp.prompt_len - 1]:+.3f}")


@app.command("prompt-shift")
def prompt_shift_cmd(
    trait: Annotated[str, typer.Argument(help="Built-in trait name or trait file.")],
    vectors: VectorsOpt,
    layer: LayerOpt = None,
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: <vectors folder>/prompt_shift)."),
    questions: int = typer.Option(10, min=1, help="Evaluation questions per condition."),
    samples: int = typer.Option(2, min=1, help="Sampled answers per question and condition."),
    shots: str = typer.Option("0,1,2,4,8", help="Many-shot counts ('' to skip)."),
    no_ladder: bool = typer.Option(False, "--no-ladder", help="Skip the system-prompt ladder."),
    max_new_tokens: int = typer.Option(48, min=1, help="Answer length cap."),
    judge: JudgeOpt = "offline",
    seed: SeedOpt = 0,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Does the last prompt token's projection predict the trait of the answer?

    Runs 8 system prompts from trait-suppressing to trait-eliciting and many-shot prompts;
    writes prompt_shift.json / .jsonl / .png (a rerun with the same inputs resumes).

    Example: pvlens monitor prompt-shift evil -v runs/evil --layer 15
    """
    import pvlens
    from pvlens.judges import load_judge, parse_judge_spec
    from pvlens.monitor import PromptShiftConfig, prompt_shift
    from pvlens.traits import load_trait

    spec = load_trait(trait)
    _check_vectors(vectors, layer)
    kind, judge_opts = parse_judge_spec(judge)
    counts = tuple(int_list(shots, "--shots") or [])
    if any(n < 0 for n in counts):
        raise typer.BadParameter(f"--shots takes counts >= 0, got {shots!r}")
    cfg = PromptShiftConfig(n_questions=questions, samples=samples, max_new_tokens=max_new_tokens,
                            shots=counts, ladder=not no_ladder, seed=seed)
    vp = Path(vectors)
    out = out or (vp if vp.is_dir() else vp.parent) / "prompt_shift"
    judge_obj = load_judge(kind, trait=spec, **judge_opts)
    m = pvlens.load_model(model, device=device)
    lay = _layer_or_default(layer, vectors, m.cfg.n_layers)
    res = prompt_shift(m, spec, vectors, lay, out, judge=judge_obj, cfg=cfg, overwrite=overwrite)
    for c in res.conditions:
        typer.echo(f"{c['kind']:7s} {c['label']:16s} projection {c['projection']:+7.3f}   trait {c['trait']:5.1f}")
    typer.echo("Pearson r: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in res.r.items()))
    typer.echo(f"wrote {out}/prompt_shift.json and {res.plot}")
