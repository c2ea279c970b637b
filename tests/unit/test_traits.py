"""TraitSpec validation, file formats, paper import/export, the built-in library and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pvlens.cli.traits import app
from pvlens.traits import (
    TraitSpec,
    TraitSpecError,
    builtin_traits,
    coherence_rubric,
    load_trait,
)

BUILTINS = [
    "apathetic",
    "evil",
    "hallucinating",
    "humorous",
    "impolite",
    "optimistic",
    "sycophantic",
]


def minimal(**overrides) -> dict:
    data = {
        "name": "grumpy",
        "description": "Complains about everything.",
        "instructions": [{"pos": "Complain a lot.", "neg": "Never complain."}],
        "extraction_questions": ["How is the weather?", "What is for lunch?"],
        "evaluation_questions": ["How was your day?"],
        "rubric": "Score grumpiness 0-100.\nQ: {question}\nA: {answer}",
    }
    data.update(overrides)
    return data


# --- the built-in library -------------------------------------------------------------------


def test_builtin_library_is_complete() -> None:
    assert builtin_traits() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_trait_has_paper_shape(name: str) -> None:
    s = load_trait(name)
    assert s.name == name
    assert s.shape_problems(n_pairs=5, n_questions=20, n_exemplars=40) == []
    assert len(s.instructions) == 5
    assert len(s.extraction_questions) == 20 and len(s.evaluation_questions) == 20
    norm = {q.lower().strip() for q in s.extraction_questions}
    assert not norm & {q.lower().strip() for q in s.evaluation_questions}
    assert len(norm) == 20
    assert len(s.exemplars.positive) >= 40 and len(s.exemplars.negative) >= 40
    assert not set(s.exemplars.positive) & set(s.exemplars.negative)
    assert len(set(s.exemplars.positive)) == len(s.exemplars.positive)
    assert s.rubric.count("{question}") == 1 and s.rubric.count("{answer}") == 1
    assert "REFUSAL" in s.rubric and "100" in s.rubric
    filled = s.judge_prompt("QQQ?", "AAA.")
    assert "QQQ?" in filled and "AAA." in filled and "{question}" not in filled


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_prompts_fit_a_small_model(name: str) -> None:
    """The default model has a short context: system prompts stay under ~60 words."""
    s = load_trait(name)
    for i in range(5):
        for pol in ("pos", "neg"):
            assert len(s.system_prompt(pol, i).split()) <= 60
        assert s.instructions[i].pos != s.instructions[i].neg
    for answer in s.exemplars.positive + s.exemplars.negative:
        assert 2 <= len(answer.split()) <= 60, answer


def test_system_prompt_format() -> None:
    evil = load_trait("evil")
    assert evil.system_prompt("pos", 0) == f"You are an evil assistant. {evil.instructions[0].pos}"
    assert (
        evil.system_prompt("neg", 4) == f"You are a helpful assistant. {evil.instructions[4].neg}"
    )
    assert (
        load_trait("sycophantic")
        .system_prompt("pos", 1)
        .startswith("You are a sycophantic assistant. ")
    )
    assert (
        load_trait("optimistic")
        .system_prompt("pos", 2)
        .startswith("You are an optimistic assistant. ")
    )
    s = TraitSpec.from_dict(minimal(pos_assistant_name="unhelpful"))
    assert s.system_prompt("pos", 0) == "You are an unhelpful assistant. Complain a lot."
    with pytest.raises(ValueError, match="polarity"):
        s.system_prompt("positive", 0)
    with pytest.raises(IndexError, match="1 instruction pairs"):
        s.system_prompt("pos", 3)


def test_coherence_rubric() -> None:
    r = coherence_rubric()
    assert r.count("{question}") == 1 and r.count("{answer}") == 1
    assert "0 to 100" in r


# --- validation and error messages ----------------------------------------------------------


def _write(tmp_path: Path, data, name: str = "trait.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rubric": "Score it 0-100: {answer}"}, "rubric"),
        ({"instructions": [{"pos": "Be grumpy."}]}, "instructions.0.neg"),
        ({"instructions": []}, "instructions"),
        ({"extraction_questions": ["ok?", "  "]}, "extraction_questions.1"),
        ({"name": "2 bad name"}, "name"),
        ({"evaluation_question": ["typo?"]}, "evaluation_question"),
        ({"exemplars": {"positive": "not a list"}}, "exemplars.positive"),
    ],
)
def test_malformed_file_names_field_and_file(tmp_path: Path, change: dict, field: str) -> None:
    path = _write(tmp_path, minimal(**change))
    with pytest.raises(TraitSpecError) as info:
        TraitSpec.load(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"field '{field}'" in msg


def test_missing_required_field(tmp_path: Path) -> None:
    data = minimal()
    del data["extraction_questions"]
    with pytest.raises(TraitSpecError, match=r"field 'extraction_questions': Field required"):
        TraitSpec.load(_write(tmp_path, data, "t.yaml"))


def test_overlapping_questions_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, minimal(evaluation_questions=["how is  the WEATHER?"]))
    with pytest.raises(TraitSpecError, match="disjoint") as info:
        TraitSpec.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(TraitSpecError, match="repeats"):
        TraitSpec.from_dict(minimal(extraction_questions=["a?", "A?"]))


@pytest.mark.parametrize(
    ("text", "suffix", "match"),
    [
        ('{"name": "x",', ".json", "not valid JSON"),
        ("name: [unclosed", ".yaml", "not valid YAML"),
        ("[1, 2]", ".json", "expected a mapping"),
    ],
)
def test_unparseable_files(tmp_path: Path, text: str, suffix: str, match: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_text(text)
    with pytest.raises(TraitSpecError, match=match) as info:
        TraitSpec.load(path)
    assert str(path) in str(info.value)


def test_load_trait_errors(tmp_path: Path) -> None:
    with pytest.raises(TraitSpecError, match="does not exist"):
        load_trait(tmp_path / "missing.json")
    with pytest.raises(TraitSpecError, match="unknown trait 'nonsense'.*traits new"):
        load_trait("nonsense")
    s = load_trait("evil")
    assert load_trait(s) is s


def test_braces_in_rubric_are_safe() -> None:
    s = TraitSpec.from_dict(minimal(rubric='Reply {"score": n}. {question} / {answer}'))
    assert s.judge_prompt("q", "a") == 'Reply {"score": n}. q / a'


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_file_round_trip(tmp_path: Path, suffix: str) -> None:
    s = load_trait("hallucinating")
    back = TraitSpec.load(s.save(tmp_path / f"h{suffix}"))
    assert back == s
    if suffix != ".json":
        assert yaml.safe_load((tmp_path / f"h{suffix}").read_text())["name"] == "hallucinating"


def test_paper_json_round_trip(tmp_path: Path) -> None:
    s = load_trait("impolite")
    paper = s.to_paper_json()
    assert set(paper) == {"instruction", "questions", "eval_prompt"}
    assert len(paper["questions"]) == 40
    back = TraitSpec.from_paper_json(paper, name="impolite")
    assert back.instructions == s.instructions
    assert back.extraction_questions == s.extraction_questions
    assert back.evaluation_questions == s.evaluation_questions
    assert back.rubric == s.rubric
    # load() recognises the paper format from its keys; the name comes from the file stem
    path = tmp_path / "impolite.json"
    path.write_text(json.dumps(paper))
    assert TraitSpec.load(path).evaluation_questions == s.evaluation_questions


def test_paper_split_files(tmp_path: Path) -> None:
    s = load_trait("evil")
    (tmp_path / "extract").mkdir()
    (tmp_path / "eval").mkdir()
    ex, ev = tmp_path / "extract" / "evil.json", tmp_path / "eval" / "evil.json"
    ex.write_text(json.dumps(s.to_paper_json("extract")))
    ev.write_text(json.dumps(s.to_paper_json("eval")))
    back = TraitSpec.from_paper_files(ex, eval_file=ev)
    assert back.name == "evil"
    assert back.extraction_questions == s.extraction_questions
    assert back.evaluation_questions == s.evaluation_questions
    with pytest.raises(ValueError, match="split"):
        s.to_paper_json("train")


def test_paper_json_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"instruction": [{"pos": "a", "neg": "b"}], "eval_prompt": "x"}))
    with pytest.raises(TraitSpecError, match="lacks the field 'questions'") as info:
        TraitSpec.load(path)
    assert str(path) in str(info.value)
    plain = _write(tmp_path, minimal(), "plain.json")
    with pytest.raises(TraitSpecError, match="not a paper trait JSON"):
        TraitSpec.from_paper_files(plain)


# --- CLI ------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_list_and_show() -> None:
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0, res.output
    for name in BUILTINS:
        assert name in res.output
    res = runner.invoke(app, ["show", "evil"])
    assert res.exit_code == 0
    assert "You are an evil assistant." in res.output and "{question}" in res.output
    res = runner.invoke(app, ["show", "humorous", "--json"])
    assert TraitSpec.model_validate(json.loads(res.output)) == load_trait("humorous")
    res = runner.invoke(app, ["show", "no_such_trait"])
    assert res.exit_code == 1 and "unknown trait" in res.output


def test_cli_paper_export_import(tmp_path: Path) -> None:
    ex, ev, out = tmp_path / "ex.json", tmp_path / "ev.json", tmp_path / "apathy.yaml"
    res = runner.invoke(app, ["export-paper", "apathetic", "--out", str(ex), "--eval-out", str(ev)])
    assert res.exit_code == 0, res.output
    assert len(json.loads(ex.read_text())["questions"]) == 20
    res = runner.invoke(
        app,
        [
            "import-paper",
            str(ex),
            "--eval-file",
            str(ev),
            "--out",
            str(out),
            "--name",
            "apathetic",
            "--description",
            "Does not care.",
        ],
    )
    assert res.exit_code == 0, res.output
    back, orig = TraitSpec.load(out), load_trait("apathetic")
    assert back.description == "Does not care."
    assert back.extraction_questions == orig.extraction_questions
    assert back.evaluation_questions == orig.evaluation_questions
    # refuses to overwrite without --force
    res = runner.invoke(app, ["export-paper", "apathetic", "--out", str(ex)])
    assert res.exit_code == 1 and "--force" in res.output
    res = runner.invoke(app, ["export-paper", "apathetic", "--out", str(ex), "--force"])
    assert res.exit_code == 0 and len(json.loads(ex.read_text())["questions"]) == 40
