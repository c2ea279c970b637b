"""`pvlens monitor ...`: projection scores, per-token views, the prompt-shift experiment."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    help="Monitor traits with projections on persona vectors (before or after generation).",
    no_args_is_help=True,
)


def _named_vectors(specs: list[str]) -> dict[str, str]:
    """['evil=runs/evil', 'runs/syc'] → {'evil': 'runs/evil', <trait from metadata>: 'runs/syc'}."""
    from pvlens.vectors import PersonaVectors

    out = {}
    for s in specs:
        if "=" in s:
            name, path = s.split("=", 1)
        else:
            path = s
            name = PersonaVectors.load(path).trait or Path(path).stem
        if name in out:
            raise typer.BadParameter(f"trait {name!r} given twice; name them: --vectors NAME=PATH")
        out[name] = path
    return out


@app.command("score")
def score_cmd(
    message: list[str] = typer.Argument(..., help="User message(s) to score (one request each)."),
    vectors: list[str] = typer.Option(..., "--vectors", "-v", help="Vectors as PATH or NAME=PATH; repeat for several traits."),
    layer: int = typer.Option(None, help="Block index for every trait (default: each vectors' choice, else the middle)."),
    system: str = typer.Option(None, help="System prompt of the requests."),
    reply: str = typer.Option(None, help="An assistant reply to append (then 'response' scores it)."),
    reduction: str = typer.Option("last_prompt", help="last_prompt (before generation) | prompt_avg | response_avg."),
    cosine: bool = typer.Option(False, help="Cosine instead of projection."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Projection score per trait for each request, all traits from one forward pass.

    Example: pvlens monitor score -v evil=runs/evil -v sycophantic=runs/sycophantic "How do I get revenge?"
    """
    import pvlens
    from pvlens.monitor import TraitMonitor

    m = pvlens.load_model(model)
    mon = TraitMonitor(m, _named_vectors(vectors), layer=layer, reduction=reduction, cosine=cosine)
    convs = []
    for text in message:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        if reply is not None:
            msgs.append({"role": "assistant", "content": reply})
        convs.append(msgs)
    for text, scores in zip(message, mon.score_batch(convs), strict=True):
        if as_json:
            typer.echo(json.dumps({"message": text, "scores": scores, "layers": mon.layers}))
        else:
            parts = "  ".join(f"{t}={s:+.3f} (L{mon.layers[t]})" for t, s in scores.items())
            typer.echo(f"{parts}   {text}")


@app.command("tokens")
def tokens_cmd(
    text: str = typer.Argument(..., help="User message (or raw text with --raw)."),
    vectors: str = typer.Option(..., "--vectors", "-v", help="Vectors file or extraction folder."),
    layer: int = typer.Option(None, help="Block index (default: the vectors' choice, else the middle)."),
    reply: str = typer.Option(None, help="Assistant reply to colour as well."),
    generate_reply: bool = typer.Option(False, "--generate", help="Let the model answer (greedy) and colour its reply."),
    system: str = typer.Option(None, help="System prompt."),
    raw: bool = typer.Option(False, help="Treat TEXT as plain text (no chat template)."),
    html: Path = typer.Option(None, help="Write a self-contained HTML view (opens offline)."),
    png: Path = typer.Option(None, help="Write a PNG view (matplotlib)."),
    cosine: bool = typer.Option(False, help="Cosine instead of projection."),
    max_new_tokens: int = typer.Option(64, help="Reply length with --generate."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
) -> None:
    """Colour every token by its projection on the persona vector.

    Example: pvlens monitor tokens "How should I treat my rivals?" --generate -v runs/evil --html tokens.html
    """
    import pvlens
    from pvlens.core.generation import generate
    from pvlens.monitor import default_layer, token_projections, tokens_html, tokens_png

    m = pvlens.load_model(model)
    lay = layer if layer is not None else default_layer(vectors, m.cfg.n_layers)
    if raw:
        conv = text
    else:
        conv = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        if generate_reply:
            reply = generate(m, [conv], max_new_tokens=max_new_tokens, progress=False).texts[0]
        if reply is not None:
            conv.append({"role": "assistant", "content": reply})
    tp = token_projections(m, conv, vectors, lay, cosine)
    if html is None and png is None:
        for t, v in zip(tp.tokens, tp.values, strict=True):
            typer.echo(f"{v:+8.3f}  {t!r}")
    if html is not None:
        tokens_html(tp, html)
        typer.echo(f"wrote {html}")
    if png is not None:
        tokens_png(tp, png)
        typer.echo(f"wrote {png}")
    typer.echo(f"layer {lay}: response mean {tp.response_mean:+.3f}, last prompt token "
               f"{tp.values[tp.prompt_len - 1]:+.3f}")


@app.command("prompt-shift")
def prompt_shift_cmd(
    trait: str = typer.Argument(..., help="Built-in trait name or trait file."),
    vectors: str = typer.Option(..., "--vectors", "-v", help="Vectors file or extraction folder."),
    layer: int = typer.Option(None, help="Block index (default: the vectors' choice, else the middle)."),
    out: Path = typer.Option(None, help="Output folder (default: <vectors folder>/prompt_shift)."),
    questions: int = typer.Option(10, help="Evaluation questions per condition."),
    samples: int = typer.Option(2, help="Sampled answers per question and condition."),
    shots: str = typer.Option("0,1,2,4,8", help="Many-shot counts ('' to skip)."),
    no_ladder: bool = typer.Option(False, "--no-ladder", help="Skip the system-prompt ladder."),
    max_new_tokens: int = typer.Option(48, help="Answer length cap."),
    judge: str = typer.Option("offline", help="offline | openai | anthropic | local."),
    seed: int = typer.Option(0, help="Sampling seed."),
    model: str = typer.Option(None, help="Model (default: offline SmolLM2-135M-Instruct)."),
) -> None:
    """Does the last prompt token's projection predict the trait of the answer?

    Runs 8 system prompts from trait-suppressing to trait-eliciting and many-shot prompts;
    writes prompt_shift.json / .jsonl / .png (rerun to resume).

    Example: pvlens monitor prompt-shift evil -v runs/evil --layer 15
    """
    import pvlens
    from pvlens.judges import load_judge
    from pvlens.monitor import PromptShiftConfig, default_layer, prompt_shift
    from pvlens.traits import load_trait

    spec = load_trait(trait)
    m = pvlens.load_model(model)
    lay = layer if layer is not None else default_layer(vectors, m.cfg.n_layers)
    vp = Path(vectors)
    out = out or (vp if vp.is_dir() else vp.parent) / "prompt_shift"
    cfg = PromptShiftConfig(n_questions=questions, samples=samples, max_new_tokens=max_new_tokens,
                            shots=tuple(int(x) for x in shots.split(",") if x.strip()),
                            ladder=not no_ladder, seed=seed)
    res = prompt_shift(m, spec, vectors, lay, out, judge=load_judge(judge, trait=spec), cfg=cfg)
    for c in res.conditions:
        typer.echo(f"{c['kind']:7s} {c['label']:16s} projection {c['projection']:+7.3f}   trait {c['trait']:5.1f}")
    typer.echo("Pearson r: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in res.r.items()))
    typer.echo(f"wrote {out}/prompt_shift.json and {res.plot}")
