"""The local logprob judge: digit-tree math, the single-token rule, and runs on tiny models."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pvlens.core.model import tiny_model
from pvlens.judges import load_judge
from pvlens.judges.cache import JudgementCache
from pvlens.judges.local import (
    DigitTokens,
    LocalJudge,
    integer_distribution_digits,
    integer_distribution_single,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return tiny_model()


# --- pure math on a fake vocabulary -------------------------------------------------------------
# ids 0-9 are the digits, 10 is "<stop>", 11 is "x"
DIGITS = DigitTokens(first={i: str(i) for i in range(10)}, cont={i: str(i) for i in range(10)})


def scripted(table: dict[tuple[int, ...], dict[int, float]]):
    """next_logprobs for sequences [PROMPT, *digits]: the table maps digits so far -> probs."""

    def next_logprobs(seqs):
        out = torch.full((len(seqs), 12), -1e9)
        for row, seq in enumerate(seqs):
            for tid, p in table.get(tuple(seq[1:]), {10: 1.0}).items():
                out[row, tid] = math.log(p)
        return out

    return next_logprobs


def test_digit_tree_matches_hand_computation():
    table = {
        (): {4: 0.5, 7: 0.3, 11: 0.2},  # root: "4", "7" or junk
        (4,): {10: 0.6, 2: 0.4},  # "4" then stop, or "42"
        (7,): {10: 1.0},
    }
    dist = integer_distribution_digits([99], scripted(table), DIGITS)
    assert dist[4] == pytest.approx(0.3) and dist[42] == pytest.approx(0.2)
    assert dist[7] == pytest.approx(0.3)
    assert sum(dist.values()) == pytest.approx(0.8)


def test_digit_tree_reaches_100_and_drops_invalid_numbers():
    table = {
        (): {1: 0.8, 9: 0.2},
        (1,): {0: 0.5, 10: 0.5},  # "1" stop, or "10"
        (1, 0): {0: 0.5, 10: 0.5},  # "10" stop, or "100"
        (9,): {9: 0.5, 10: 0.5},  # "99" is fine
    }
    dist = integer_distribution_digits([99], scripted(table), DIGITS)
    assert dist[1] == pytest.approx(0.4) and dist[10] == pytest.approx(0.2)
    assert dist[100] == pytest.approx(0.2) and dist[99] == pytest.approx(0.1)
    assert dist[9] == pytest.approx(0.1)
    assert max(dist) <= 100


def test_digit_tree_does_not_expand_cheap_prefixes():
    calls = []
    inner = scripted({(): {5: 0.999, 6: 0.001}, (5,): {10: 1.0}})

    def counting(seqs):
        calls.append([tuple(s) for s in seqs])
        return inner(seqs)

    dist = integer_distribution_digits([99], counting, DIGITS, expand_threshold=0.01)
    assert calls[1] == [(99, 5)]  # "6" (0.1 % of the mass) is taken to stop, not expanded
    assert dist[6] == pytest.approx(0.001)


def test_single_token_rule():
    tokens = DigitTokens(first={0: "7", 1: "70", 2: "100", 3: "7"}, cont={})
    logprobs = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.1, 0.3]))
    assert integer_distribution_single(logprobs, tokens) == {
        7: pytest.approx(0.2),
        70: pytest.approx(0.2),
        100: pytest.approx(0.3),
    }


# --- on models -------------------------------------------------------------------------------
def test_runs_on_tiny_model(tiny, tmp_path):
    judge = load_judge("local", trait="evil", model=tiny, cache=JudgementCache(tmp_path / "c.db"))
    assert judge.method == "digits"  # SmolLM2's tokenizer splits numbers into digits
    pairs = [("How do I make friends?", "Join a club."), ("Hi", "Go away, fool.")]
    for aspect in ("trait", "coherence"):
        for j in judge.judge_many(pairs, aspect):
            assert j.error is None
            assert 0.0 <= j.detail["integer_mass"] <= 1.0 + 1e-6
            assert (j.score is None) == (j.detail["integer_mass"] < 0.25)
            assert j.score is None or 0.0 <= j.score <= 100.0
    d = judge.describe()
    assert d["kind"] == "local" and d["model"].startswith("tiny-llama@")
    other = tiny_model(seed=1)
    assert LocalJudge("evil", model=other, cache=False).model != d["model"]


class ScriptedLM(torch.nn.Module):
    """An HF-style causal LM whose next token depends on the digits after the prompt."""

    def __init__(self, tokenizer, prompt_len: int, table):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab = len(tokenizer)
        self.prompt_len = prompt_len
        self.digit = {str(i): tokenizer.convert_tokens_to_ids(str(i)) for i in range(10)}
        self.stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.table = table

    def forward(self, input_ids):
        logits = torch.full((*input_ids.shape, self.vocab), -30.0)
        inv = {v: k for k, v in self.digit.items()}
        for row, seq in enumerate(input_ids.tolist()):
            so_far = "".join(inv[t] for t in seq[self.prompt_len :])
            for tok, p in self.table.get(so_far, {"stop": 1.0}).items():
                tid = self.stop if tok == "stop" else self.digit[tok]
                logits[row, -1, tid] = math.log(p)
        return SimpleNamespace(logits=logits)


def test_hf_style_model_gives_the_expected_score(tiny):
    tok = tiny.tokenizer
    judge = LocalJudge("evil", model=tiny, cache=False)  # only to build the prompt
    prompt_len = len(judge.prompt_ids("trait", "q", "a"))
    table = {
        "": {"8": 0.6, "3": 0.3, "stop": 0.1},
        "8": {"stop": 0.5, "0": 0.5},
        "3": {"stop": 1.0},
    }
    lm = ScriptedLM(tok, prompt_len, table)
    hf_judge = LocalJudge("evil", model=lm, tokenizer=tok, cache=False)
    [j] = hf_judge.judge_many([("q", "a")])
    # 8: 0.3, 80: 0.3, 3: 0.3 -> mass 0.9
    assert j.detail["integer_mass"] == pytest.approx(0.9, abs=1e-4)
    assert j.score == pytest.approx((8 * 0.3 + 80 * 0.3 + 3 * 0.3) / 0.9, abs=1e-3)
    lm.table = {"": {"5": 0.2, "stop": 0.8}, "5": {"stop": 1.0}}
    assert LocalJudge("evil", model=lm, tokenizer=tok, cache=False).score("q", "b") is None


def test_hf_model_without_tokenizer_is_an_error():
    with pytest.raises(ValueError, match="tokenizer"):
        LocalJudge("evil", model=torch.nn.Linear(2, 2), cache=False)
