"""`pvlens sae ...`: build a corpus, train, evaluate and decompose with sparse autoencoders."""

from __future__ import annotations

from pathlib import Path

import typer

from pvlens.cli.options import DeviceOpt, LayerOpt, ModelOpt, existing_file, finite, int_list

app = typer.Typer(help="Sparse autoencoders: corpus, training, evaluation, decomposition.",
                  no_args_is_help=True)

DEFAULT_CORPUS = Path("sae/corpus/smollm2-chat.jsonl")
DEFAULT_CORPUS_DIR = Path("sae/corpus/built")


@app.command("build-corpus")
def build_corpus_cmd(
    out: Path = typer.Option(DEFAULT_CORPUS_DIR, help="Output folder (corpus.jsonl, generated.jsonl, manifest.json); reruns resume."),
    n_composed: int = typer.Option(3000, help="Composed prompts (templates x tasks x topics)."),
    limit: int = typer.Option(None, help="Generate only the first N replies of the shuffled plan (a balanced subset)."),
    max_new_tokens: int = typer.Option(128, help="Reply length cap."),
    temperature: float = typer.Option(0.7, help="Sampling temperature."),
    steer_alpha: float = typer.Option(4.0, help="Steering strength for the steered replies (raw vector units)."),
    replies_per_prompt: int = typer.Option(1, help="Conditions each prompt is answered under (all different)."),
    batch_size: int = typer.Option(64, help="Cache slots of continuous batching per process."),
    shard: str = typer.Option(None, help="I/N: generate slice I of N of the plan only (run N processes, then once without --shard to write the corpus)."),
    fill_tokens: int = typer.Option(None, help="Top up with Python stdlib docstrings (PSF-2.0) until the corpus has this many tokens."),
    max_minutes: float = typer.Option(None, help="Stop generating after this long (rerun to resume)."),
    extra: list[Path] = typer.Option(None, help="More JSONL / text files to include (e.g. rollouts)."),
    package_text: bool = typer.Option(True, help="Include licensed English text from installed packages."),
    seed: int = typer.Option(0, help="Seed of the plan and of each reply's sampling."),
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Build the SAE corpus: the model's replies to templates x tasks x topics, built-in prompts
    and trait questions (neutral, every trait's system prompts, steered +/-), plus shipped
    datasets and licensed package text; deduplicated, with a manifest of token counts.

    Example: pvlens sae build-corpus --out sae/corpus/built --limit 2000 --max-minutes 15
    """
    import pvlens
    from pvlens.sae.corpusbuild import RunConfig, SaeCorpusConfig, build_sae_corpus, plan_jobs

    for path in extra or []:
        existing_file(path, "--extra")
    finite(steer_alpha, "--steer-alpha")
    cfg = SaeCorpusConfig(n_composed=n_composed, limit=limit, max_new_tokens=max_new_tokens,
                          temperature=temperature, steer_alpha=steer_alpha, seed=seed,
                          replies_per_prompt=replies_per_prompt)
    run = RunConfig(batch_size=batch_size, max_minutes=max_minutes, extra=list(extra or []),
                    package_text=package_text, fill_tokens=fill_tokens, shard=_shard(shard))
    typer.echo(f"{len(plan_jobs(cfg))} replies in the plan -> {out}")
    m = pvlens.load_model(model, device=device)
    manifest = build_sae_corpus(m, out, cfg, run)
    if run.shard is not None:
        gen = manifest["generation"]
        typer.echo(f"shard {shard}: {gen['generated_now']} replies in {gen['seconds']:.0f} s; "
                   f"{'done' if gen['complete'] else 'incomplete (rerun to resume)'}")
        return
    for name, st in manifest["sources"].items():
        typer.echo(f"  {name:28s} rows {st['rows']:>6}  dup {st['duplicates']:>5}  tokens {st['tokens']:>9}")
    typer.echo(f"total {manifest['total_tokens']} tokens; generation "
               f"{'complete' if manifest['generation']['complete'] else 'incomplete (rerun to resume)'}; "
               f"wrote {out}/manifest.json")


def _shard(spec: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N), checked."""
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--shard {spec!r}: expected I/N, e.g. 0/2") from None
    if not 0 <= i < n:
        raise typer.BadParameter(f"--shard {spec!r}: need 0 <= I < N")
    return i, n


@app.command("list")
def list_cmd() -> None:
    """The SAEs that ship with pvlens (use the name as --sae), with their held-out metrics.

    Example: pvlens sae list
    """
    from pvlens.sae.shipped import shipped_sae_names, shipped_sae_summary

    names = shipped_sae_names()
    if not names:
        typer.echo("no SAEs ship with this install")
    for name in names:
        s = shipped_sae_summary(name)
        metrics = "  ".join(f"{k} {s[k]:.3g}" for k in ("fvu", "l0", "dead_fraction", "ce_loss_score")
                            if isinstance(s[k], int | float))
        typer.echo(f"{name:28s} layer {s['layer']:>2}  latents {s['d_sae']}  k {s['k']}  {metrics}")


@app.command("calibrate")
def calibrate_cmd(
    sae_dir: Path = typer.Argument(..., help="Trained SAE folder (`pvlens sae train`)."),
    l0: float = typer.Option(..., help="Mean active latents per token to calibrate the threshold to."),
    n_tokens: int = typer.Option(65536, help="Training-split tokens the threshold is computed on."),
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Re-set a saved SAE's inference threshold for a mean L0 on its training documents (never the
    held-out ones); removes a stale eval.json, so rerun `pvlens sae eval` after it.

    Example: pvlens sae calibrate sae/trained/smollm2-135m-layer15 --l0 62
    """
    import pvlens
    from pvlens.sae.calibrate import recalibrate

    existing_file(sae_dir, "SAE folder")
    if not l0 > 0:
        raise typer.BadParameter(f"--l0 {l0}: must be > 0")
    m = pvlens.load_model(model, device=device)
    rec = recalibrate(m, sae_dir, l0, n_tokens)
    typer.echo(f"threshold {rec['previous_threshold']} -> {rec['threshold']:.4f} (mean L0 {l0:g} on "
               f"{rec['tokens']} training tokens); run `pvlens sae eval {sae_dir}` again")


@app.command("publish")
def publish_cmd(
    sae_dir: Path = typer.Argument(..., help="Trained and evaluated SAE folder (`pvlens sae train`, `pvlens sae eval`)."),
    name: str = typer.Option(..., help="Short name it ships as (pvlens/data/saes/<name>; `--sae <name>` loads it)."),
) -> None:
    """Copy a trained SAE's weights, record and eval.json into pvlens's shipped SAEs.

    Example: pvlens sae publish sae/trained/smollm2-135m-layer15 --name smollm2-135m-layer15
    """
    import json

    from pvlens.sae.shipped import publish_sae

    existing_file(sae_dir, "SAE folder")
    ev = sae_dir / "eval.json"
    if not ev.exists():
        raise typer.BadParameter(f"{ev} is missing: run `pvlens sae eval {sae_dir}` first (it ships with the SAE)")
    dest = publish_sae(sae_dir, name, json.loads(ev.read_text()))
    typer.echo(f"published {sae_dir} as {name} -> {dest}")


@app.command("train")
def train_cmd(
    layer: LayerOpt = None,
    corpus: list[Path] = typer.Option(None, help="Corpus file(s): JSONL chat/rollouts/text, .txt, or a dataset folder."),
    out: Path = typer.Option(None, help="Output folder (default: sae/trained/<model>-layer<L>-k<k>)."),
    recipe: Path = typer.Option(None, help="YAML recipe (see sae/recipes/); flags override it."),
    k: float = typer.Option(None, help="Mean active latents per token (BatchTopK)."),
    expansion: int = typer.Option(None, help="d_sae = expansion x d_model."),
    training_tokens: int = typer.Option(None, help="Activations to train on."),
    batch_size: int = typer.Option(None, help="Tokens per step."),
    lr: float = typer.Option(None, help="Learning rate."),
    seed: int = typer.Option(None, help="Seed."),
    resume: bool = typer.Option(True, help="Continue from the latest checkpoint in --out."),
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Train a BatchTopK SAE (sae_lens) on one layer and save it for `SAE.load_from_disk`.

    Example: pvlens sae train --recipe sae/recipes/smollm2-135m-layer15.yaml
    """
    import pvlens
    from pvlens.sae.train import SaeTrainConfig, recipe_corpus, sae_layer, train_sae

    if recipe is not None:
        existing_file(recipe, "recipe")

    overrides = dict(layer=layer, k=k, expansion=expansion, training_tokens=training_tokens,
                     batch_size=batch_size, lr=lr, seed=seed)
    if recipe is not None:
        cfg = SaeTrainConfig.from_yaml(recipe, **overrides)
        corpus = corpus or [Path(p) for p in recipe_corpus(recipe)]
    else:
        cfg = SaeTrainConfig(**{k_: v for k_, v in overrides.items() if v is not None})
    if not corpus:
        raise typer.BadParameter(
            f"no corpus: pass --corpus FILE (build one with `pvlens sae build-corpus`, "
            f"default {DEFAULT_CORPUS}) or a --recipe with a corpus entry"
        )
    for path in corpus:
        existing_file(path, "corpus")
    m = pvlens.load_model(model, device=device)
    cfg = cfg.changed(layer=sae_layer(cfg, m))
    out = out or Path("sae/trained") / f"{m.cfg.model_name}-layer{cfg.layer}-k{cfg.k:g}"
    train_sae(m, corpus, cfg, out, resume=resume)
    typer.echo(f"saved {out}  (evaluate with: pvlens sae eval {out})")


@app.command("eval")
def eval_cmd(
    sae_dir: Path = typer.Argument(..., help="Trained SAE folder."),
    n_tokens: int = typer.Option(100_000, help="Held-out tokens for FVU / L0 / dead latents."),
    ce_tokens: int = typer.Option(8192, help="Held-out tokens for the spliced CE loss (0: skip)."),
    ks: str = typer.Option("8,16,32,64,128", help="Inference top-k values for the trade-off curve ('' to skip)."),
    curve_ce: bool = typer.Option(False, help="Also measure the spliced CE loss at every k (slower)."),
    corpus: list[Path] = typer.Option(None, help="Evaluate on these documents instead of the held-out split."),
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Evaluate the loaded inference SAE on held-out documents; writes eval.json next to it.

    Example: pvlens sae eval sae/trained/SmolLM2-135M-Instruct-layer15-k32
    """
    import pvlens
    from pvlens.sae.corpus import read_documents
    from pvlens.sae.evaluate import evaluate_sae

    existing_file(sae_dir, "SAE folder")
    for path in corpus or []:
        existing_file(path, "corpus")
    k_values = int_list(ks, "--ks") or []
    m = pvlens.load_model(model, device=device)
    docs = read_documents(corpus, m.tokenizer) if corpus else None
    r = evaluate_sae(m, sae_dir, docs, n_tokens=n_tokens, ce_tokens=ce_tokens, ks=k_values,
                     curve_ce=curve_ce)
    typer.echo(f"layer {r['layer']}  d_sae {r['d_sae']}  tokens {r['n_tokens']}")
    typer.echo(f"FVU {r['fvu']:.4f}  L0 {r['l0']:.1f}  dead {r['dead']}  dense {r['dense']}")
    if "ce_clean" in r:
        typer.echo(f"CE clean {r['ce_clean']:.4f}  spliced {r['ce_sae']:.4f}  zero {r['ce_zero']:.4f}  "
                   f"score {r['ce_loss_score']:.3f}")
    for row in r["k_curve"]:
        ce = f"  CE {row['ce']:.4f}" if "ce" in row else ""
        typer.echo(f"  top-{row['k']:<4d} FVU {row['fvu']:.4f}{ce}")
    typer.echo(f"wrote {sae_dir / 'eval.json'}")


def _persona_vectors(layer: int, vectors: Path) -> dict:
    """The decomposed vector and every shipped persona vector at `layer` (for per-feature cosines)."""
    from pvlens.sae.corpusbuild import shipped_steer_traits
    from pvlens.vectors.coerce import direction

    out = {"decomposed": direction(vectors, layer)}
    for name in shipped_steer_traits(None):
        out[name] = direction(name, layer)
    return out


def _steering_trait(vectors: Path, trait: str | None) -> str:
    """The trait steering is judged for: --trait, or the one the vectors name."""
    from pvlens.vectors import PersonaVectors

    trait = trait or PersonaVectors.load(vectors).trait
    if trait is None:
        raise typer.BadParameter("--trait is needed for steering (the vectors do not name one)")
    return trait


@app.command("decompose")
def decompose_cmd(
    vectors: Path = typer.Option(..., help="Persona vectors (vectors.safetensors or a run folder)."),
    sae: str = typer.Option(..., help="Saved SAE folder, or RELEASE/ID of a sae_lens registry SAE (SAE.from_pretrained)."),
    layer: LayerOpt = None,
    top: int = typer.Option(20, help="Features to report."),
    contexts: int = typer.Option(5, help="Top-activating contexts per feature (0: skip)."),
    corpus: list[Path] = typer.Option(None, help="Documents to search contexts in (default: the SAE's corpus)."),
    context_tokens: int = typer.Option(60_000, help="Tokens scanned for contexts (a model pass each)."),
    steer_top: int = typer.Option(0, help="Steer with the N best features and judge the replies (0: skip)."),
    trait: str = typer.Option(None, help="Trait for steering questions and judge (default: from the vectors)."),
    alpha: float = typer.Option(8.0, help="Steering strength (units of the persona vector's norm; 8 = the evil sweep's best at layer 15)."),
    n_questions: int = typer.Option(10, help="Steering: first N evaluation questions of the trait."),
    samples: int = typer.Option(2, help="Steering: sampled replies per question and condition."),
    temperature: float = typer.Option(0.7, help="Steering: sampling temperature (0 = greedy)."),
    n_random: int = typer.Option(20, help="Steering: random features at matched norm as the null (>= 20 for a 95th percentile)."),
    n_null: int = typer.Option(200, help="Random directions for the ranking null (max over latents)."),
    html: Path = typer.Option(None, "--html", help="Feature dashboard page (default: <out>/dashboard.html)."),
    out: Path = typer.Option(None, help="Output folder (default: <sae>/decompose-<vectors stem>, or decompose-<stem> for a registry SAE)."),
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Rank SAE features against a persona vector with a random-direction null; contexts,
    role fractions, logit effects, k-sparse fit, optional single-feature steering against random
    features. Writes decomposition.{json,txt} and an offline dashboard page.

    Example: pvlens sae decompose --vectors runs/evil --sae sae/trained/... --top 20 --html evil.html
    """
    import pvlens
    from pvlens.io.atomic import write_text_atomic
    from pvlens.sae import decompose as dec
    from pvlens.sae.dashboard import write_dashboard
    from pvlens.sae.loading import resolve_sae
    from pvlens.vectors.coerce import direction

    existing_file(vectors, "vectors")
    finite(alpha, "--alpha")
    for path in corpus or []:
        existing_file(path, "corpus")
    trait = _steering_trait(vectors, trait) if steer_top > 0 else trait
    m = pvlens.load_model(model, device=device)
    loaded = resolve_sae(sae, device=str(m.W_E.device), layer=layer)
    v = direction(vectors, loaded.layer)
    docs = _context_docs(m, loaded, corpus, contexts)
    result = dec.decompose(m, loaded, v, docs, top=top, n_contexts=contexts, context_tokens=context_tokens,
                           n_null=n_null, persona_vectors=_persona_vectors(loaded.layer, vectors))
    if steer_top > 0:
        from pvlens.traits import load_trait

        feats = [fr.feature for fr in result["features"][:steer_top]]
        result["steering"] = dec.feature_steering(
            m, loaded, v, feats, load_trait(trait).evaluation_questions[:n_questions], dec.default_judge(trait),
            alpha=alpha, n_random=n_random, samples=samples, temperature=temperature)
        result["steering_summary"] = dec.steering_summary(result["steering"])
    out = out or (loaded.path or Path(".")) / f"decompose-{vectors.stem}"
    write_text_atomic(out / "decomposition.json", dec.to_json(result))
    write_text_atomic(out / "decomposition.txt", dec.text_table(result))
    page = write_dashboard(result, html or out / "dashboard.html",
                           f"SAE features of {vectors.name} at layer {loaded.layer}")
    typer.echo(dec.text_table(result))
    typer.echo(f"wrote {out}/decomposition.{{json,txt}} and {page}")


def _context_docs(m, loaded, corpus: list[Path] | None, contexts: int):
    """Documents to search for contexts: --corpus, else the corpus recorded with the SAE."""
    from pvlens.sae.corpus import read_documents

    if contexts <= 0:
        return None
    sources = corpus or [Path(s) for s in loaded.meta.get("corpus", []) if s != "<documents>"]
    if not sources:
        raise typer.BadParameter("no corpus recorded with the SAE: pass --corpus for contexts (or --contexts 0)")
    return read_documents(sources, m.tokenizer)


@app.command("dashboard")
def dashboard_cmd(
    decomposition: Path = typer.Argument(..., help="decomposition.json written by `pvlens sae decompose`."),
    out: Path = typer.Option(None, help="HTML file (default: dashboard.html next to the JSON)."),
) -> None:
    """Write the offline feature dashboard (one HTML page, no JavaScript) for a saved decomposition.

    Example: pvlens sae dashboard sae/trained/X/decompose-evil/decomposition.json --out evil.html
    """
    import json

    from pvlens.sae.dashboard import write_dashboard

    existing_file(decomposition, "decomposition")
    page = write_dashboard(json.loads(decomposition.read_text()), out or decomposition.with_name("dashboard.html"))
    typer.echo(f"wrote {page}")
