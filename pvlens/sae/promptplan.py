"""The user prompts and conditions of the SAE chat corpus: templates × topics × tasks, each
answered neutrally, under a trait's eliciting or suppressing system prompt, or steered along a
shipped persona vector in either direction.

Composed prompts keep any one template, topic or task from dominating: prompt i uses template
i mod T, and (topic, task) pairs are drawn without replacement from a seeded permutation, so the
first N prompts of the plan are a balanced, reproducible sample of the grid.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TEMPLATES = [
    "{Task} {topic}.",
    "Could you {task} {topic}?",
    "I'm curious: please {task} {topic}.",
    "hey, can you {task} {topic}",
    "My teacher asked me to {task} {topic}. Can you help?",
    "In a few sentences, {task} {topic}.",
    "As simply as you can, {task} {topic}.",
    "I have a meeting tomorrow and need you to {task} {topic}.",
    "Quick question. {Task} {topic}?",
    "For a blog post I'm writing, {task} {topic}.",
    "Pretend I know nothing. {Task} {topic}.",
    "My friend and I disagree about this. {Task} {topic}, please.",
]
"""User-message shapes (register, politeness, length)."""

TASKS = [
    "explain", "give three facts about", "write a short poem about", "give me advice on",
    "compare two opposing views on", "tell a short story involving", "summarise the history of",
    "list the pros and cons of", "write a friendly email about", "describe a common misconception about",
    "suggest a weekend project related to", "give a step-by-step guide to", "make a joke about",
    "write a persuasive paragraph about", "ask me three quiz questions about",
    "describe how a child would see", "give your honest opinion on", "explain the ethics of",
]
"""What the user wants done (lowercase imperative; `{Task}` capitalises it)."""

TOPICS = [
    "black holes", "the French Revolution", "baking sourdough bread", "learning Python",
    "saving money", "climate change", "friendship", "job interviews", "the immune system",
    "chess openings", "gardening in small spaces", "the stock market", "social media",
    "dinosaurs", "meditation", "electric cars", "ancient Rome", "writing a novel",
    "moving to a new city", "sleep", "artificial intelligence", "volcanoes", "coffee",
    "public speaking", "the ocean", "video games", "vaccines", "the Moon landing",
    "learning a language", "running a marathon", "houseplants", "honesty at work",
    "cats and dogs", "the internet", "recycling", "jazz music", "first aid", "time management",
    "the solar system", "renting an apartment", "online privacy", "chocolate", "bees",
    "democracy", "grief", "cryptography", "football", "photography", "kindness to strangers",
    "revenge", "lying to friends", "breaking the rules", "power and control", "winning an argument",
]
"""Subjects, including a few morally loaded ones so trait features have something to act on."""


@dataclass(frozen=True)
class Condition:
    """How one reply is produced."""

    name: str
    """'neutral', '<trait>:pos', '<trait>:neg', or 'steer:<trait>:+' / 'steer:<trait>:-'."""
    trait: str | None = None
    """The trait whose system prompt or vector is used."""
    polarity: str | None = None
    """'pos'/'neg' (system prompt) or '+'/'-' (steering sign)."""


def conditions(prompt_traits: list[str], steer_traits: list[str], neutral_weight: int) -> list[Condition]:
    """One cycle of conditions: `neutral_weight` neutral, every trait's pos and neg system
    prompt, and both steering signs of every steered trait."""
    out = [Condition("neutral")] * neutral_weight
    out += [Condition(f"{t}:{p}", t, p) for t in prompt_traits for p in ("pos", "neg")]
    out += [Condition(f"steer:{t}:{s}", t, s) for t in steer_traits for s in ("+", "-")]
    return out


def composed_prompts(n: int, seed: int = 0) -> list[dict]:
    """The first `n` prompts of the grid: {'prompt', 'template', 'task', 'topic'}."""
    pairs = [(t, p) for t in range(len(TASKS)) for p in range(len(TOPICS))]
    random.Random(seed).shuffle(pairs)
    out = []
    for i in range(min(n, len(pairs))):
        ti, pi = pairs[i]
        template = TEMPLATES[i % len(TEMPLATES)]
        task = TASKS[ti]
        text = template.format(task=task, Task=task[:1].upper() + task[1:], topic=TOPICS[pi])
        out.append({"prompt": text, "template": i % len(TEMPLATES), "task": ti, "topic": TOPICS[pi]})
    return out


def grid_size() -> int:
    """Distinct (task, topic) pairs: the most composed prompts the plan can make."""
    return len(TASKS) * len(TOPICS)
