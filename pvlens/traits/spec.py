"""TraitSpec: everything pvlens needs to know about one character trait.

A trait is described once (name, description) and carries the artifacts the paper's
pipeline uses: contrastive instruction pairs for the system prompt, disjoint extraction
and evaluation questions, a judge rubric, and exemplars for the offline judge.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
"""A string that is not blank (surrounding whitespace is stripped)."""

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"
"""Trait names become file names and CLI arguments: a letter, then letters, digits, '_' or '-'."""

PAPER_SHAPE = {"instructions": 5, "extraction_questions": 20, "evaluation_questions": 20}
"""Artifact sizes the paper generates for every trait (§2)."""


class TraitSpecError(ValueError):
    """A trait file that cannot be read; the message names the file and the field."""


class InstructionPair(BaseModel):
    """One contrastive pair of system-prompt instructions."""

    model_config = ConfigDict(extra="forbid")

    pos: NonEmpty = Field(description="Instruction that elicits the trait.")
    neg: NonEmpty = Field(description="Instruction that suppresses the trait.")


class Exemplars(BaseModel):
    """Short example answers the offline judge is fitted on (not used for extraction)."""

    model_config = ConfigDict(extra="forbid")

    positive: list[NonEmpty] = Field(
        default_factory=list, description="Answers that show the trait."
    )
    negative: list[NonEmpty] = Field(
        default_factory=list, description="Answers that do not (plain helpful and neutral ones)."
    )


def _norm(question: str) -> str:
    """Case- and whitespace-insensitive key, so near-duplicates count as shared questions."""
    return " ".join(question.lower().split())


class TraitSpec(BaseModel):
    """A character trait and its artifacts (paper §2: 5 pairs, 20 + 20 questions, a rubric)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Short identifier, e.g. 'evil'.")
    description: NonEmpty = Field(description="One-sentence definition of the trait.")
    instructions: list[InstructionPair] = Field(
        min_length=1, description="Contrastive system-prompt instructions (paper: 5)."
    )
    extraction_questions: list[NonEmpty] = Field(
        min_length=1, description="Questions used to extract the vector (paper: 20)."
    )
    evaluation_questions: list[NonEmpty] = Field(
        default_factory=list, description="Held-out questions for sweeps and evals (paper: 20)."
    )
    rubric: NonEmpty = Field(
        description="Judge prompt with {question} and {answer} slots; 0-100 score."
    )
    exemplars: Exemplars = Field(
        default_factory=Exemplars, description="Labelled answers for the offline judge."
    )
    pos_assistant_name: str | None = Field(
        default=None,
        description="Name in 'You are a/an {name} assistant.' for pos (default: name).",
    )

    @field_validator("rubric")
    @classmethod
    def _rubric_has_slots(cls, v: str) -> str:
        missing = [s for s in ("{question}", "{answer}") if s not in v]
        if missing:
            raise ValueError(f"rubric must contain the slots {missing}")
        return v

    @model_validator(mode="after")
    def _questions_disjoint(self) -> TraitSpec:
        for field in ("extraction_questions", "evaluation_questions"):
            seen: set[str] = set()
            for q in getattr(self, field):
                if _norm(q) in seen:
                    raise ValueError(f"{field} repeats the question {q!r}")
                seen.add(_norm(q))
        shared = {_norm(q) for q in self.extraction_questions} & {
            _norm(q) for q in self.evaluation_questions
        }
        if shared:
            raise ValueError(
                "extraction_questions and evaluation_questions must be disjoint; "
                f"shared: {sorted(shared)[:3]}"
            )
        return self

    # --- prompts ---------------------------------------------------------------------------
    def system_prompt(self, polarity: str, index: int) -> str:
        """The paper's extraction system prompt: 'You are a/an {name} assistant. {instruction}'."""
        if not -len(self.instructions) <= index < len(self.instructions):
            raise IndexError(
                f"trait '{self.name}' has {len(self.instructions)} instruction pairs; "
                f"index {index} is out of range"
            )
        pair = self.instructions[index]
        if polarity == "pos":
            name, instruction = self.pos_assistant_name or self.name, pair.pos
        elif polarity == "neg":
            name, instruction = "helpful", pair.neg
        else:
            raise ValueError(f"polarity must be 'pos' or 'neg', got {polarity!r}")
        article = "an" if name[:1].lower() in "aeiou" else "a"
        return f"You are {article} {name} assistant. {instruction}"

    def judge_prompt(self, question: str, answer: str) -> str:
        """The rubric filled in (str.replace, so braces elsewhere in the rubric are safe)."""
        return self.rubric.replace("{question}", question).replace("{answer}", answer)

    def shape_problems(
        self,
        n_pairs: int = PAPER_SHAPE["instructions"],
        n_questions: int = PAPER_SHAPE["extraction_questions"],
        n_exemplars: int = 0,
    ) -> list[str]:
        """Ways this spec falls short of the paper's artifact sizes (empty list: conforms).

        Validation accepts any non-empty spec (a quick experiment may use 2 questions); this is
        the stricter check the library, `traits new` and the tests apply.
        """
        problems = []
        if len(self.instructions) != n_pairs:
            problems.append(f"instructions: {len(self.instructions)} pairs, expected {n_pairs}")
        for field in ("extraction_questions", "evaluation_questions"):
            if len(getattr(self, field)) < n_questions:
                problems.append(
                    f"{field}: {len(getattr(self, field))} questions, expected {n_questions}"
                )
        for side in ("positive", "negative"):
            have = len(getattr(self.exemplars, side))
            if have < n_exemplars:
                problems.append(f"exemplars.{side}: {have} answers, expected {n_exemplars}")
        return problems

    # --- files -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> TraitSpec:
        """Read a TraitSpec from JSON or YAML, or a paper-code trait JSON (auto-detected)."""
        path = Path(path)
        data = _read_mapping(path)
        if _is_paper_format(data):
            name = data.get("name", path.stem)
            return cls.from_paper_json(data, name=name, source=path)
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "<dict>") -> TraitSpec:
        """Validate a mapping; errors name the source and every offending field."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise TraitSpecError(f"{source}: invalid trait spec — {_describe(e)}") from e

    @classmethod
    def from_paper_json(
        cls,
        data: dict[str, Any],
        name: str,
        source: str | Path = "<paper json>",
        eval_data: dict[str, Any] | None = None,
    ) -> TraitSpec:
        """Import the paper code's trait JSON: {instruction: [{pos, neg}], questions, eval_prompt}.

        The paper's repository keeps one file per split (`trait_data_extract/{trait}.json` and
        `trait_data_eval/{trait}.json`, 20 questions each). Pass the extract file as `data` and
        the eval file as `eval_data` to keep that split; given one file only, its question list is
        split in half (first half extraction, second half evaluation).
        """
        try:
            questions = list(data["questions"])
            if eval_data is not None:
                extraction, evaluation = questions, list(eval_data["questions"])
            else:
                half = len(questions) // 2 if len(questions) > 1 else len(questions)
                extraction, evaluation = questions[:half], questions[half:]
            spec = {
                "name": name,
                "description": data.get("description", f"The trait '{name}'."),
                "instructions": data["instruction"],
                "extraction_questions": extraction,
                "evaluation_questions": evaluation,
                "rubric": data["eval_prompt"],
            }
        except KeyError as e:
            raise TraitSpecError(
                f"{source}: paper trait JSON lacks the field {e} "
                "(expected keys: instruction, questions, eval_prompt)"
            ) from e
        except TypeError as e:
            raise TraitSpecError(
                f"{source}: paper trait JSON has a field of the wrong type: {e}"
            ) from e
        return cls.from_dict(spec, source=source)

    @classmethod
    def from_paper_files(
        cls, extract: str | Path, eval_file: str | Path | None = None, name: str | None = None
    ) -> TraitSpec:
        """Import the paper repository's extract file (and optionally its eval file)."""
        extract = Path(extract)
        data = _read_mapping(extract)
        eval_data = _read_mapping(Path(eval_file)) if eval_file is not None else None
        for path, d in ((extract, data), (eval_file, eval_data)):
            if d is not None and not _is_paper_format(d):
                raise TraitSpecError(
                    f"{path}: not a paper trait JSON (needs the keys instruction, questions, "
                    "eval_prompt); use `TraitSpec.load` for pvlens trait files"
                )
        return cls.from_paper_json(
            data, name=name or data.get("name", extract.stem), source=extract, eval_data=eval_data
        )

    def to_paper_json(self, split: str = "all") -> dict[str, Any]:
        """Export in the paper code's format.

        `split="all"` writes extraction + evaluation questions in one list (what
        `from_paper_json` splits back in half); `"extract"` / `"eval"` write one split, as the
        paper's `trait_data_extract/` and `trait_data_eval/` files do.
        """
        questions = {
            "all": self.extraction_questions + self.evaluation_questions,
            "extract": self.extraction_questions,
            "eval": self.evaluation_questions,
        }
        if split not in questions:
            raise ValueError(f"split must be 'all', 'extract' or 'eval', got {split!r}")
        return {
            "instruction": [p.model_dump() for p in self.instructions],
            "questions": list(questions[split]),
            "eval_prompt": self.rubric,
        }

    def save(self, path: str | Path) -> Path:
        """Write JSON or YAML by suffix."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump(exclude_none=True)
        if path.suffix in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
        else:
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return path


def _read_mapping(path: Path) -> dict[str, Any]:
    """Parse a JSON/YAML file whose top level is a mapping, with errors that name the file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise TraitSpecError(f"cannot read trait file {path}: {e.strerror or e}") from e
    is_yaml = path.suffix in (".yaml", ".yml")
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "YAML" if is_yaml else "JSON"
        raise TraitSpecError(f"{path} is not valid {kind}: {e}") from e
    if not isinstance(data, dict):
        raise TraitSpecError(
            f"{path}: expected a mapping (JSON object) at the top level, got {type(data).__name__}"
        )
    return data


def _is_paper_format(data: dict[str, Any]) -> bool:
    return "instruction" in data and "eval_prompt" in data


def _describe(e: ValidationError) -> str:
    """pydantic errors as "field 'a.b.0': message; ..." (model-level errors as 'spec')."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = re.sub(r"^Value error, ", "", err["msg"])
        if err["type"] == "string_pattern_mismatch" and loc == "name":
            msg = "must start with a letter and contain only letters, digits, '_' or '-'"
        parts.append(f"field '{loc}': {msg}" if loc else msg)
    return "; ".join(parts)
