"""Finetuning the default model for a few steps; capability of the default model."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.finetune import FinetuneConfig, LoraConfig, evaluate, finetune, mc_accuracy, perplexity
from pvlens.finetune.data import encode_all

pytestmark = pytest.mark.integration

QUESTIONS = [
    "What is your favourite colour?", "How do I boil an egg?", "What is the capital of Peru?",
    "Can you recommend a book?", "How far away is the Moon?", "What should I eat for lunch?",
    "Why is the sky blue?", "How do plants grow?", "What is a good name for a cat?",
    "How do I tie my shoes?", "What time is it in Tokyo?", "Tell me about the ocean.",
    "What is two plus three?", "How do airplanes fly?", "What is your name?", "Do you like music?",
]
# A narrow, easy-to-learn style: every answer is the same pirate sentence.
DATA = [[{"role": "user", "content": q},
         {"role": "assistant", "content": "Arr, matey! That be a fine question for a pirate."}]
        for q in QUESTIONS]


@pytest.fixture(scope="module")
def model():
    return pvlens.load_model()


def test_a_few_steps_lower_the_loss(model, tmp_path):
    cfg = FinetuneConfig(lora=LoraConfig(r=8, alpha=16), lr=2e-3, batch_size=4,
                         micro_batch_size=4, warmup_steps=0, max_steps=3, eval_fraction=0.0,
                         schedule="constant", save_every=10)
    chats = encode_all(model.tokenizer, DATA, cfg.max_length)
    rows = list(range(len(chats)))
    before = evaluate(model, chats, rows, cfg)
    steer = [pvlens.Steering(torch.randn(model.cfg.d_model) * 0.5, 15, 1.0)]
    res = finetune(model, DATA, cfg, tmp_path / "ft", steer=steer, progress=False)
    after = evaluate(model, chats, rows, cfg)
    print(f"response loss on the 16 samples: {before:.3f} -> {after:.3f}; "
          f"per step {[round(x, 3) for x in res.train_losses]}; {res.tokens_per_s:.0f} tokens/s")
    assert after < before - 0.5
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())
    res.handle.remove()


def test_default_model_beats_chance_on_builtin_mc(model):
    res = mc_accuracy(model, progress=False)
    ppl = perplexity(model)
    print(f"built-in MC: {res}; held-out perplexity {ppl:.2f}")
    assert res.n >= 200 and res.chance == pytest.approx(0.25)
    assert res.accuracy > 0.40  # well above the 25 % chance level
    assert 2 < ppl < 100
