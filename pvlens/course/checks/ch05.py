"""Checks for chapter 5 (screening): response-average projection, the prompt-only
approximation, AUROC, and the random-direction null."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pvlens.core.activations import collect
from pvlens.course.checks.inputs import LAYER, close, conversations, passed, run_check, tiny, vector
from pvlens.monitor.projection import project
from pvlens.vectors.validate import auroc, projection_aurocs, random_directions


def _reference(model, chats, v) -> dict[str, torch.Tensor]:
    acts = collect(model, chats, ("response_avg", "last_prompt"), layers=[LAYER], dtype=torch.float32,
                   progress=False)
    return {k: project(a[:, 0], v) for k, a in acts.items()}


def check_response_avg_projection(fn: Callable) -> None:
    """fn(model, chat, v, layer) -> scalar: mean over the response tokens of x·v̂."""
    def body() -> None:
        model = tiny()
        chats = conversations(model)
        v = vector(model.cfg.d_model, seed=2)
        want = _reference(model, chats, v)["response_avg"]
        got = torch.stack([torch.as_tensor(fn(model, c, v, LAYER)).reshape(()) for c in chats])
        close(got, want, "response_avg_projection",
              "Average positions prompt_len .. len(ids)-1 (the response, end-of-turn included), "
              "then project on v / ‖v‖.", atol=1e-3, rtol=1e-3)
    run_check("response_avg_projection", body)


def check_prompt_only_delta(fn: Callable) -> None:
    """fn(model, chat, v, layer) -> proj(response average) − proj(last prompt token)."""
    def body() -> None:
        model = tiny()
        chats = conversations(model)
        v = vector(model.cfg.d_model, seed=3)
        ref = _reference(model, chats, v)
        got = torch.stack([torch.as_tensor(fn(model, c, v, LAYER)).reshape(()) for c in chats])
        close(got, ref["response_avg"] - ref["last_prompt"], "prompt_only_delta",
              "One forward pass: response-average projection minus the projection at position "
              "prompt_len - 1.", atol=1e-3, rtol=1e-3)
    run_check("prompt_only_delta", body)


def check_auroc(fn: Callable) -> None:
    """fn(pos, neg) -> P(pos > neg) + ½ P(tie), over all pairs."""
    g = torch.Generator().manual_seed(0)
    cases = [
        (torch.randn(7, generator=g) + 1, torch.randn(9, generator=g)),
        (torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 0.0])),  # ties count half
        (torch.tensor([0.0, 0.1]), torch.tensor([5.0, 6.0, 7.0])),  # perfectly wrong = 0
    ]
    for pos, neg in cases:
        close(torch.as_tensor(fn(pos, neg)).reshape(()), auroc(pos, neg), "auroc",
              "Compare every positive with every negative; a tie counts 0.5.", atol=1e-9)
    passed("auroc")


def check_random_direction_aurocs(fn: Callable) -> None:
    """fn(trait_acts [n,d], clean_acts [m,d], n_dirs, seed) -> [n_dirs] AUROCs of random directions,
    drawn with `pvlens.vectors.validate.random_directions(n_dirs, d, seed)`."""
    g = torch.Generator().manual_seed(1)
    trait, clean = torch.randn(12, 16, generator=g) + 0.3, torch.randn(10, 16, generator=g)
    want = projection_aurocs(trait, clean, random_directions(25, 16, seed=4))
    close(fn(trait, clean, 25, 4), want, "random_direction_aurocs",
          "Draw the directions with random_directions(n_dirs, d_model, seed), project both sets "
          "on each and take the AUROC per direction.", atol=1e-9)
    passed("random_direction_aurocs")
