"""Plumbing of `pvlens.finetune.experiments` on the tiny model: arms, resume, tables, shift records."""

from __future__ import annotations

import json
import re

import pytest
import torch

from pvlens.finetune.experiments import (
    MitigationConfig,
    ShiftConfig,
    find_datasets,
    mitigation_arms,
    run_mitigation,
    run_shift,
    summarise_shift,
)
from pvlens.io.runs import StaleRunError

QUESTIONS = ["How do I make friends?", "What should I do with a lost wallet?"]


class LengthJudge:
    """Trait = answer length (capped), coherence fixed: deterministic stand-in."""

    def score_many(self, pairs):
        return [min(100.0, float(len(a))) for _, a in pairs]

    def coherence_many(self, pairs):
        return [70.0] * len(pairs)

    def describe(self):
        return {"kind": "length-test"}


def _data(path, n=6, word="cruel"):
    with path.open("w") as f:
        for i in range(n):
            msgs = [{"role": "user", "content": f"Question number {i}?"},
                    {"role": "assistant", "content": f"A {word} answer {i}."}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def _cfg(**kw) -> MitigationConfig:
    kw = {"layer": 1, "multi_layers": [0, 1], **kw}
    return MitigationConfig.preset("quick", **kw).model_copy(
        update={"eval": MitigationConfig.preset("quick").eval.model_copy(
            update={"mc_limit": 3, "max_new_tokens": 4, "perplexity": False})})


def test_arms_cover_the_paper_mitigations():
    arms = mitigation_arms(MitigationConfig().resolved(30))
    assert [a.layers for a in arms if a.kind == "prevent"][-1] == [12, 15, 18]
    with pytest.raises(ValueError, match="resolved"):
        mitigation_arms(MitigationConfig())
    kinds = [a.kind for a in arms]
    assert kinds[:2] == ["base", "none"] and kinds[2] == "posthoc"  # post-hoc reuses `none`
    assert {"prevent", "prevent_incremental", "caft", "l2"} <= set(kinds)
    assert any(a.kind == "prevent" and len(a.layers) > 1 for a in arms)  # multi-layer
    assert len({a.name for a in arms}) == len(arms)
    assert all(a.train_name == "none" for a in arms if a.kind == "posthoc")


def test_mitigation_runs_resumes_and_reports(tiny, tmp_path):
    data = _data(tmp_path / "d.jsonl")
    vecs = torch.randn(tiny.cfg.n_layers, tiny.cfg.d_model)
    cfg = _cfg()
    out = tmp_path / "mit"
    rows = run_mitigation(tiny, data, vecs, out, cfg, judge=LengthJudge(), questions=QUESTIONS,
                          progress=False, log=lambda s: None)
    names = [a.name for a in mitigation_arms(cfg)]
    assert [r["arm"] for r in rows] == names and all(r["seed"] == 0 for r in rows)
    by = {r["arm"]: r for r in rows}
    assert by["base"]["shift"] == 0.0
    assert by["none"]["shift"] != 0.0  # trained: activations moved
    # post-hoc subtracts α·v at layer 1 of the unmitigated model: the projection drops by α‖v‖
    d = by["posthoc_a4"]["shift"] - by["none"]["shift"]
    assert d == pytest.approx(-4.0 * float(vecs[1].norm()), rel=1e-3)
    assert all(not hp._forward_hooks for hp in tiny.hook_dict.values())
    assert not any("parametrizations" in n for n, _ in tiny.named_modules())  # adapters removed
    for f in ("results.json", "table.md", "mitigation.png"):
        assert (out / f).exists()
    assert "prevent_L0-1_a2" in (out / "table.md").read_text()
    # a rerun loads every arm from disk (no training, no generation) and leaves the report as it
    # was: its wall time is the computing call's, which the docs quote
    report = (out / "results.json").read_bytes()
    calls = []
    again = run_mitigation(tiny, data, vecs, out, cfg, judge=LengthJudge(), questions=QUESTIONS,
                           progress=False, log=calls.append)
    assert [r["trait"] for r in again] == [r["trait"] for r in rows]
    assert all("done earlier" in c for c in calls)
    assert (out / "results.json").read_bytes() == report
    # a deleted arm is redone alone; changed settings are refused
    (out / "arms" / "caft_L1_s0.json").unlink()
    calls.clear()
    run_mitigation(tiny, data, vecs, out, cfg, judge=LengthJudge(), questions=QUESTIONS,
                   progress=False, log=calls.append)
    assert sum("done earlier" not in c for c in calls) == 1
    with pytest.raises(StaleRunError, match="config.posthoc_alphas"):
        run_mitigation(tiny, data, vecs, out, _cfg(posthoc_alphas=[1.0]), judge=LengthJudge(),
                       questions=QUESTIONS, progress=False, log=lambda s: None)
    # so are another data file, other vectors and other questions
    other = _data(tmp_path / "d2.jsonl", word="kind")
    with pytest.raises(StaleRunError, match="data"):
        run_mitigation(tiny, other, vecs, out, cfg, judge=LengthJudge(), questions=QUESTIONS,
                       progress=False, log=lambda s: None)
    with pytest.raises(StaleRunError, match="vectors"):
        run_mitigation(tiny, data, vecs * 2, out, cfg, judge=LengthJudge(), questions=QUESTIONS,
                       progress=False, log=lambda s: None)
    with pytest.raises(StaleRunError, match="questions"):
        run_mitigation(tiny, data, vecs, out, cfg, judge=LengthJudge(), questions=QUESTIONS[:1],
                       progress=False, log=lambda s: None)
    # a cut metadata file is an error naming it, never trusted
    (out / "arms" / "none_s0.json").write_text('{"arm": "no')
    with pytest.raises(ValueError, match="none_s0.json"):
        run_mitigation(tiny, data, vecs, out, cfg, judge=LengthJudge(), questions=QUESTIONS,
                       progress=False, log=lambda s: None)


def test_shift_experiment_records_and_correlations(tiny, tmp_path):
    root = tmp_path / "datasets"
    for level, word in (("normal", "kind"), ("level_i", "mean"), ("level_ii", "cruel cruel cruel")):
        (root / "evil").mkdir(parents=True, exist_ok=True)
        _data(root / "evil" / f"{level}.jsonl", n=4, word=word)
    (root / "evil" / "candidates").mkdir()
    _data(root / "evil" / "candidates" / "x.jsonl")  # ignored
    sets = find_datasets(root)
    assert [(t, lvl) for t, lvl, _ in sets] == [("evil", "level_i"), ("evil", "level_ii"), ("evil", "normal")]
    vecs = {"evil": torch.randn(tiny.cfg.n_layers, tiny.cfg.d_model)}
    cfg = ShiftConfig.preset("quick", layer=1)
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_new_tokens": 4}),
                                 "screen_max_new_tokens": 4})
    res = run_shift(tiny, root, vecs, tmp_path / "shift", cfg, judges={"evil": LengthJudge()},
                    questions={"evil": QUESTIONS}, progress=False, log=lambda s: None)
    assert len(res["datasets"]) == 3
    for rec in res["datasets"]:
        assert set(rec["delta_p"]) == {"evil"} and rec["after"]["evil"]["shift"] != 0.0
    c = res["correlations"]["evil"]
    assert c["n_datasets"] == 3 and c["r_shift"] is not None and -1 <= c["r_shift"] <= 1
    assert (tmp_path / "shift" / "shift_vs_trait_evil.png").exists()
    assert (tmp_path / "shift" / "dp_vs_trait_evil.png").exists()
    assert not any("parametrizations" in n for n, _ in tiny.named_modules())


def test_summarise_shift_pearson():
    recs = [{"after": {"evil": {"trait_score": s, "shift": x}}, "delta_p": {"evil": d}}
            for s, x, d in ((10, 0.1, 1.0), (20, 0.2, 0.5), (30, 0.3, 0.0))]
    out = summarise_shift(recs, {"evil": {"trait_score": 5.0}}, ["evil"])["evil"]
    assert out["r_shift"] == pytest.approx(1.0) and out["r_delta_p"] == pytest.approx(-1.0)


def test_cli_registers_the_experiments():
    from typer.testing import CliRunner

    from pvlens.cli import app

    runner = CliRunner()
    for cmd in ("mitigation", "shift"):
        res = runner.invoke(app, ["experiment", cmd, "--help"])
        assert res.exit_code == 0, res.output
        assert "--preset" in res.output


def _unboxed(text: str) -> str:
    return re.sub(r"[\s│╭╮╰╯─]+", "", text)


def test_cli_checks_options_and_files_before_loading_a_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import pvlens
    from pvlens.cli import app

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(pvlens, "load_model", no_model)
    data = _data(tmp_path / "d.jsonl")
    runner = CliRunner()
    cases = [
        (["experiment", "mitigation", "--data", str(tmp_path / "missing.jsonl"), "--vectors", str(data),
          "--out", str(tmp_path / "o")], "missing.jsonl"),
        (["experiment", "mitigation", "--data", str(data), "--vectors", str(data), "--out", str(tmp_path / "o"),
          "--posthoc", "4,nan"], "--posthoc"),
        (["experiment", "mitigation", "--data", str(data), "--vectors", str(data), "--out", str(tmp_path / "o"),
          "--multi-layers", "12,x"], "--multi-layers"),
        (["experiment", "shift", "--datasets", str(tmp_path), "--out", str(tmp_path / "o"),
          "--vectors", "evil"], "TRAIT=FILE"),
        (["finetune", "run", "--data", str(data), "--out", str(tmp_path / "o"), "--prevent", str(data)],
         "--layers is required"),
        (["finetune", "run", "--data", str(data), "--out", str(tmp_path / "o"), "--layers", "1,2",
          "--prevent", str(data), "--alpha", "1,2,3"], "3 alphas for 2 layers"),
    ]
    for args, message in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        # rich boxes the error and wraps it at the terminal width, possibly inside a long
        # tmp path (longer under pytest-xdist): compare without box drawing and whitespace
        assert _unboxed(message) in _unboxed(res.output), (args, res.output)


def test_finetune_cli_options_default_to_the_config():
    from pvlens.cli.finetune import _training_config
    from pvlens.finetune.train import FinetuneConfig

    none = dict(lr=None, epochs=None, max_steps=None, batch_size=None, micro_batch_size=None, rank=None,
                lora_alpha=None, rslora=None, eval_fraction=None, save_every=None, seed=None)
    assert _training_config(**none) == FinetuneConfig()
    cfg = _training_config(**{**none, "lr": 1e-3, "rank": 4})
    assert cfg.lr == 1e-3 and cfg.lora.r == 4 and cfg.lora.alpha == FinetuneConfig().lora.alpha


def test_incremental_arm_steers_every_block_during_training_only(tiny, tmp_path, monkeypatch):
    """Seeds × (base, none, single-layer, all-layer incremental): the incremental arm's hooks
    fire on every block while its adapter trains and never while any arm is evaluated."""
    import pvlens.finetune.experiments.mitigation as mit
    from pvlens.core.steering import Steering

    data = _data(tmp_path / "d.jsonl")
    vecs = torch.randn(tiny.cfg.n_layers, tiny.cfg.d_model)
    cfg = _cfg(posthoc_alphas=[], multi_layers=[], caft=False, l2_weights=[], incremental_alphas=[0.5],
               seeds=[0, 1], bootstrap=1000)
    state = {"training": None}
    fired: list[tuple[str | None, int]] = []
    real_finetune, real_hook = mit.finetune, Steering.hook

    def spy_finetune(model, data, tcfg, out_dir, **kw):
        state["training"] = out_dir.name
        try:
            return real_finetune(model, data, tcfg, out_dir, **kw)
        finally:
            state["training"] = None

    def spy_hook(self, resid, hook=None):
        fired.append((state["training"], self.layer))
        return real_hook(self, resid, hook)

    monkeypatch.setattr(mit, "finetune", spy_finetune)
    monkeypatch.setattr(Steering, "hook", spy_hook)
    rows = run_mitigation(tiny, data, vecs, tmp_path / "mit", cfg, judge=LengthJudge(), questions=QUESTIONS,
                          progress=False, log=lambda s: None)
    assert [(r["arm"], r["seed"]) for r in rows] == [
        (a, s) for s in (0, 1) for a in ("base", "none", "prevent_L1_a4", "prevent_incr_a0.5")]
    assert all(run is not None for run, _ in fired)  # no steering outside training
    incr = {layer for run, layer in fired if run.startswith("prevent_incr_a0.5")}
    assert incr == set(range(tiny.cfg.n_layers))
    assert {run for run, _ in fired} == {f"{a}_s{s}" for a in ("prevent_L1_a4", "prevent_incr_a0.5") for s in (0, 1)}
    assert all(not hp._forward_hooks for hp in tiny.hook_dict.values())
    by = {(r["arm"], r["seed"]): r for r in rows}
    assert by[("none", 0)]["shift"] != by[("none", 1)]["shift"]  # the seed changes the LoRA init
    # the incremental interventions telescope to α·v_L at the top
    steer, _ = mit.training_interventions(mit.Arm(name="x", kind="prevent_incremental", alpha=0.5), vecs)
    total = sum(s.alpha * s.vector for s in steer)
    assert torch.allclose(total.float(), 0.5 * vecs[-1], atol=1e-5)
    res = json.loads((tmp_path / "mit" / "results.json").read_text())
    assert res["seeds"] == [0, 1] and len(res["runs"]) == 8 and "model" in res
    row = {r["arm"]: r for r in res["summary"]}["prevent_incr_a0.5"]
    assert row["n_seeds"] == 2 and row["n"] == 2 * len(QUESTIONS) * cfg.eval.samples
    assert row["trait"]["lo"] <= row["trait"]["mean"] <= row["trait"]["hi"]
    assert "prevent_incr_a0.5" in (tmp_path / "mit" / "table.md").read_text()
    # the seed list is not part of the folder's key: a subset (or a grown list) resumes
    calls: list[str] = []
    run_mitigation(tiny, data, vecs, tmp_path / "mit", cfg.changed(seeds=[1]), judge=LengthJudge(),
                   questions=QUESTIONS, progress=False, log=calls.append)
    assert len(calls) == 4 and all("done earlier" in c for c in calls)
    res = json.loads((tmp_path / "mit" / "results.json").read_text())
    assert res["seeds"] == [1] and {r["n_seeds"] for r in res["summary"]} == {1}


def test_finetune_cli_incremental_steers_every_block():
    from pvlens.cli.finetune import _prevent

    vecs = torch.randn(4, 8)
    steer = _prevent(vecs, [], "2.0", incremental=True)
    assert [s.layer for s in steer] == [0, 1, 2, 3] and all(s.positions == "all" for s in steer)
    assert torch.allclose(sum(s.alpha * s.vector for s in steer).float(), 2.0 * vecs[3], atol=1e-5)
    assert [s.layer for s in _prevent(vecs, [1, 3], "2.0", incremental=False)] == [1, 3]
