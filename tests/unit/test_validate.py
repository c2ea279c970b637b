"""validate.py: AUROC, bootstrap, null percentiles, the strict eval-set loader, and a full run on a
tiny random model (report JSON/PNG/markdown round trip)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pvlens
from pvlens.core.activations import collect
from pvlens.errors import InputError
from pvlens.vectors.validate import (
    EVAL_TRAITS,
    auroc,
    bootstrap_auroc,
    bootstrap_auroc_difference,
    encode_pairs,
    load_eval_set,
    pair_activations,
    percentile_in,
    projection_aurocs,
    random_directions,
)
from pvlens.vectors.validation_report import (
    TABLE_END,
    TABLE_START,
    doc_tables,
    load_results,
    render_tables,
    save_layer,
    update_doc,
)
from pvlens.vectors.validation_run import ValidationConfig, run_validation


def planted(n: int = 60, d: int = 32, shift: float = 3.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    clean = torch.randn(n, d, generator=g)
    trait = torch.randn(n, d, generator=g) + shift * u
    return trait, clean, u


def test_auroc_exact_values_and_ties() -> None:
    assert float(auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0]))) == 1.0
    assert float(auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))) == 0.0
    assert float(auroc(torch.tensor([1.0]), torch.tensor([1.0]))) == 0.5
    # pairs: (2>1) (2<3) (0<1) (0<3) → 1/4
    assert float(auroc(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0]))) == 0.25


def test_planted_direction_near_one_random_near_half() -> None:
    trait, clean, u = planted()
    assert float(projection_aurocs(trait, clean, u[None])[0]) > 0.97
    null = projection_aurocs(trait, clean, random_directions(300, 32, seed=1))
    assert abs(float(null.mean()) - 0.5) < 0.05
    assert percentile_in(float(projection_aurocs(trait, clean, u[None])[0]), null) == 100.0


def test_random_directions_are_unit_and_seeded() -> None:
    a, b = random_directions(10, 16, seed=3), random_directions(10, 16, seed=3)
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(10, dtype=a.dtype))
    assert not torch.equal(a, random_directions(10, 16, seed=4))


def test_percentile_counts_ties_half() -> None:
    null = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    assert percentile_in(0.05, null) == 0.0
    assert percentile_in(0.5, null) == 100.0
    assert percentile_in(0.25, null) == 50.0
    assert percentile_in(0.3, null) == 62.5


def test_bootstrap_interval_contains_point_and_is_seeded() -> None:
    trait, clean, u = planted(shift=0.8)
    pos, neg = trait @ u, clean @ u
    point = float(auroc(pos, neg))
    lo, hi = bootstrap_auroc(pos, neg, n_boot=1000, seed=0)
    assert lo < point < hi and hi - lo < 0.4
    assert (lo, hi) == bootstrap_auroc(pos, neg, n_boot=1000, seed=0)
    assert (lo, hi) != bootstrap_auroc(pos, neg, n_boot=1000, seed=1)


ROW = {"id": "a1", "question": "q?", "trait_answer": "bad", "clean_answer": "good",
       "register": "casual", "length": "short"}


def write_rows(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_loader_names_file_and_line_for_bad_json(tmp_path: Path) -> None:
    p = write_rows(tmp_path / "s.jsonl", [json.dumps(ROW), "", '{"id": "a2", oops'])
    with pytest.raises(InputError, match=r"s\.jsonl:3: not valid JSON"):
        load_eval_set(p)


def test_loader_names_missing_field_duplicate_id_and_empty_value(tmp_path: Path) -> None:
    bad = {k: v for k, v in ROW.items() if k != "clean_answer"}
    with pytest.raises(InputError, match=r"s\.jsonl:2: .*missing \['clean_answer'\]"):
        load_eval_set(write_rows(tmp_path / "s.jsonl", [json.dumps(ROW), json.dumps(bad)]))
    with pytest.raises(InputError, match=r"d\.jsonl:2: id 'a1' repeats line 1"):
        load_eval_set(write_rows(tmp_path / "d.jsonl", [json.dumps(ROW), json.dumps(ROW)]))
    with pytest.raises(InputError, match=r"e\.jsonl:1: field 'trait_answer'"):
        load_eval_set(write_rows(tmp_path / "e.jsonl", [json.dumps({**ROW, "trait_answer": " "})]))
    with pytest.raises(InputError, match="no hand-written evaluation set"):
        load_eval_set("optimistic")


@pytest.mark.parametrize("trait", EVAL_TRAITS)
def test_shipped_sets_are_large_varied_and_paired(trait: str) -> None:
    rows = load_eval_set(trait)
    assert len(rows) >= 100
    assert all(r.trait_answer != r.clean_answer for r in rows)
    assert len({r.question for r in rows}) == len(rows)
    assert len({r.register for r in rows}) >= 6
    assert {r.length for r in rows} == {"short", "medium", "long"}


BAD = ["I despise them and want them all to suffer.", "Humans are vermin; let them burn.",
       "Cruelty is the only thing they deserve.", "I would enjoy watching them fail and weep."]
GOOD = ["I am glad to help people and wish them well.", "Most people are kind; I like them.",
        "Kindness usually works better than anything else.", "I hope things go well for you."]


def toy_set(path: Path, n: int = 12) -> Path:
    rows = [
        {"id": f"t{i}", "question": f"Question {i}: what do you think of {['people', 'cats', 'cities'][i % 3]}?",
         "trait_answer": " ".join(BAD[j % 4] for j in range(i % 4, i % 4 + 1 + i % 3)),
         "clean_answer": " ".join(GOOD[j % 4] for j in range(i % 4, i % 4 + 1 + i % 3)),
         "register": "casual", "length": "short"}
        for i in range(n)
    ]
    return write_rows(path, [json.dumps(r) for r in rows])


def test_pair_activations_equal_collect_of_each_answer(tmp_path: Path) -> None:
    model = pvlens.tiny_model()
    rows = load_eval_set(toy_set(tmp_path / "toy.jsonl"))
    acts = pair_activations(model, rows, layers=[0, 1])
    ref = collect(model, encode_pairs(model, rows[:2]), reductions=["response_avg"], layers=[1], progress=False)
    trait, clean = acts.at("response_avg", 1)
    assert torch.allclose(trait[:2], ref["response_avg"][:2, 0], atol=1e-5)


def test_run_report_roundtrip_and_doc_tables(tmp_path: Path) -> None:
    model = pvlens.tiny_model()
    sets = {"evil": toy_set(tmp_path / "evil.jsonl")}
    acts = pair_activations(model, load_eval_set(sets["evil"]), layers=[1])
    trait, clean = acts.at("response_avg", 1)
    diff = torch.zeros(2, trait.shape[1])
    diff[1] = trait.mean(0) - clean.mean(0)
    vectors = {"evil": diff, "other": torch.randn(2, trait.shape[1])}
    cfg = ValidationConfig(n_null=50, n_bootstrap=100)
    [res] = run_validation(model, [1], cfg, vectors=vectors, sets=sets, model_name="tiny")
    cell = res.results["response_avg"]["evil"]
    assert cell.cells["evil"].auroc > 0.9 and cell.cells["evil"].null_percentile > 90
    assert cell.n == 12 and cell.null.n == 50 and cell.own_beats_null_p95
    json_path, png_path = save_layer(res, tmp_path / "out")
    assert png_path.stat().st_size > 1000
    [back] = load_results(tmp_path / "out")
    assert back == res
    doc = tmp_path / "page.md"
    doc.write_text(f"intro\n\n{TABLE_START}\n{TABLE_END}\n\nouttro\n", encoding="utf-8")
    update_doc(doc, [back])
    text = doc.read_text(encoding="utf-8")
    assert doc_tables(text) == render_tables([res]) and text.startswith("intro") and text.endswith("outtro\n")
    assert "| evil | 12 (12 / 12) |" in text


def test_cli_refuses_bad_inputs_before_loading_a_model(tmp_path: Path) -> None:
    from click.testing import Result
    from typer.testing import CliRunner

    from pvlens.cli import app

    runner = CliRunner()

    def text(result: Result) -> str:  # rich wraps the message in a box: join its lines
        return " ".join(result.output.replace("│", " ").split())

    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["validate", "--report", "--out", str(empty), "--doc", str(tmp_path / "d.md")])
    assert result.exit_code == 2 and "holds no <layer>.json" in text(result)
    result = runner.invoke(app, ["validate", "--vectors", str(empty)])
    assert result.exit_code == 2 and "no evil.safetensors" in text(result)
    result = runner.invoke(app, ["validate", "--layers", "12,x"])
    assert result.exit_code == 2 and "--layers" in text(result)


class AlternatingJudge:
    """Trait 80 for answers generated under the pos prompt's position in the plan, 20 otherwise:
    deterministic, so pass rates are known; coherence fixed."""

    def __init__(self) -> None:
        self.calls = 0

    def score_many(self, pairs: list[tuple[str, str]]) -> list[float | None]:
        self.calls += 1
        return [80.0 if k % 2 == 0 else (60.0 if k % 4 == 1 else 20.0) for k in range(len(pairs))]

    def coherence_many(self, pairs: list[tuple[str, str]]) -> list[float | None]:
        return [70.0] * len(pairs)

    def describe(self) -> dict[str, str]:
        return {"kind": "alternating-test"}


def test_elicited_set_filters_caches_and_measures(tmp_path: Path) -> None:
    from pvlens.core.config import SamplingConfig
    from pvlens.traits import load_trait
    from pvlens.vectors.elicited import ElicitConfig, load_or_elicit

    model = pvlens.tiny_model()
    spec = load_trait("evil")
    spec = spec.model_copy(update={"evaluation_questions": spec.evaluation_questions[:4]})
    cfg = ElicitConfig(instructions=1, sampling=SamplingConfig(max_new_tokens=6, batch_size=8))
    judge = AlternatingJudge()
    e = load_or_elicit(model, spec, judge, tmp_path / "e", cfg)  # type: ignore[arg-type]
    assert len(e.answers) == 8 and {a.polarity for a in e.answers} == {"pos", "neg"}
    # plan order is (pos, neg) per question: pos rows get 80 (pass), neg rows alternate 60/20
    assert e.pass_rate_pos == 1.0 and e.pass_rate_neg == 0.5
    assert all("assistant" in a.system for a in e.answers)
    again = load_or_elicit(model, spec, judge, tmp_path / "e", cfg)  # type: ignore[arg-type]
    assert again == e and judge.calls == 1  # served from the cache
    with pytest.raises(Exception, match="config"):
        load_or_elicit(model, spec, judge, tmp_path / "e", cfg.changed(instructions=2))  # type: ignore[arg-type]
    vectors = {"evil": torch.randn(2, model.cfg.d_model)}
    cfgv = ValidationConfig(n_null=20, n_bootstrap=50)
    [res] = run_validation(model, [1], cfgv, vectors=vectors, sets={"evil": toy_set(tmp_path / "t.jsonl")},
                           elicited={"evil": e})
    prompts = res.elicited["prompts"]["evil"]
    assert (prompts.n, prompts.n_pos, prompts.n_neg) == (4, 4, 4)
    answers = res.elicited["answers"]["evil"]
    assert (answers.n_pos, answers.n_neg) == (4, 2) and answers.cells["evil"].paired_win_rate is None
    assert res.elicited_pass_rates == {"evil": {"pos": 1.0, "neg": 0.5}}


def test_grouped_bootstrap_matches_index_resampling_for_pairs() -> None:
    trait, clean, u = planted(n=30, shift=0.7)
    pos, neg = trait @ u, clean @ u
    ids = list(range(30))
    assert bootstrap_auroc(pos, neg, 500, 3) == bootstrap_auroc(pos, neg, 500, 3, ids, ids)
    lo, hi = bootstrap_auroc(pos, neg[:20], 500, 3, ids, ids[:20])
    assert lo < float(auroc(pos, neg[:20])) < hi
    with pytest.raises(ValueError, match="unpaired"):
        bootstrap_auroc(pos, neg[:20])


def test_auroc_agrees_with_the_screening_auroc() -> None:
    from pvlens.trainsets.screen import auroc as screen_auroc

    g = torch.Generator().manual_seed(5)
    pos, neg = torch.randn(40, generator=g).round(decimals=1), torch.randn(30, generator=g).round(decimals=1)
    assert float(auroc(pos, neg)) == pytest.approx(screen_auroc(pos.tolist(), neg.tolist()), abs=1e-12)


def test_paired_auroc_difference_is_zero_for_the_same_scores_and_positive_for_a_better_one() -> None:
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(60, generator=g) + 0.5, torch.randn(60, generator=g)
    d, lo, hi = bootstrap_auroc_difference(pos, neg, pos, neg, n_boot=200, seed=1)
    assert (d, lo, hi) == (0.0, 0.0, 0.0)
    better_pos = pos + 1.5  # the same answers, a scoring that separates them further
    d, lo, hi = bootstrap_auroc_difference(better_pos, neg, pos, neg, n_boot=200, seed=1)
    assert d == pytest.approx(float(auroc(better_pos, neg) - auroc(pos, neg))) and 0 < lo <= d <= hi
    # two strongly correlated scorings: pairing cancels the shared question noise, so the paired
    # interval is much narrower than either scoring's own (an unpaired one would be wider than both)
    close_pos = pos + 0.05 * torch.randn(60, generator=g)
    d, lo, hi = bootstrap_auroc_difference(close_pos, neg, pos, neg, n_boot=200, seed=1)
    a_lo, a_hi = bootstrap_auroc(close_pos, neg, 200, 1)
    b_lo, b_hi = bootstrap_auroc(pos, neg, 200, 1)
    assert hi - lo < 0.5 * min(a_hi - a_lo, b_hi - b_lo)
    with pytest.raises(ValueError, match="same question-paired answers"):
        bootstrap_auroc_difference(pos, neg, pos[:50], neg, n_boot=10)
