"""Chapter 0's checks: a correct answer passes, a plausible wrong one fails."""

from __future__ import annotations

import pytest
import torch

from pvlens.course.checks import ch00


def cache_resid_post(model, tokens, layer):
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_post")
    return cache[f"blocks.{layer}.hook_resid_post"]


def prompt_length(tokenizer, messages):
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def rms_norm(x, w, eps):
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * w


def add_vector_hook(vector, alpha):
    return lambda resid, hook: resid + alpha * vector


def test_correct_answers_pass(capsys):
    ch00.check_cache_resid_post(cache_resid_post)
    ch00.check_prompt_length(prompt_length)
    ch00.check_rms_norm(rms_norm)
    ch00.check_add_vector_hook(add_vector_hook)
    assert capsys.readouterr().out.count("passed") == 4


@pytest.mark.parametrize("check, wrong", [
    (ch00.check_cache_resid_post, lambda m, t, layer: m.run_with_cache(t)[1][f"blocks.{layer}.hook_resid_pre"]),
    (ch00.check_prompt_length, lambda tok, msgs: prompt_length(tok, msgs) - 3),  # without the assistant header
    (ch00.check_rms_norm, lambda x, w, eps: x / x.norm(dim=-1, keepdim=True) * w),  # L2, not RMS
    (ch00.check_add_vector_hook, lambda v, a: (lambda resid, hook: resid + v)),  # ignores alpha
])
def test_wrong_answers_fail(check, wrong):
    with pytest.raises(AssertionError):
        check(wrong)


def test_blank_answer_propagates_not_implemented():
    def blank(*args):
        raise NotImplementedError("Exercise 0.1")
    with pytest.raises(NotImplementedError):
        ch00.check_cache_resid_post(blank)


def test_results_tier_catches_a_misaligned_index():
    ch00.check_results_hf_alignment(torch.tensor([1e-5, 2e-5, 3.0]), 1e-5)
    with pytest.raises(AssertionError, match="equal resid_post"):
        ch00.check_results_hf_alignment(torch.tensor([2.0, 2.0, 3.0]), 1e-5)  # hidden_states[L] vs resid_post[L]
