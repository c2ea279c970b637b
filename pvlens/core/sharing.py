"""Which work several rows can share: identical prompts and common prompt prefixes are computed
once when nothing in the forward can tell the rows apart.

Bulk generation (`pvlens.core.bulk`) and the activation pass (`pvlens.core.activations`) both
plan their prefills here: a prefix common to a whole group (a chat template's system header),
longer prefixes common to clusters (e.g. one instruction's system prompt), then each row's own
rest, every level run in batches of similar length. Clusters are one level deep: bulk
generation removes repeated prompts before planning, the activation pass does not (the samples
of one question then share their cluster's system prompt, not the whole prompt).
"""

from __future__ import annotations

from collections.abc import Sequence

from transformer_lens import HookedTransformer

from pvlens.core.steering import Ablation, AnyIntervention, Capping, Steering, as_list


def rows_interchangeable(
    model: HookedTransformer, steer: AnyIntervention | Sequence[AnyIntervention] | None
) -> bool:
    """Whether two rows with the same prompt get the same forward, whatever their conversation
    index: no hook attached outside `steer`, and every intervention in it acts by position
    name ('all', 'prompt', 'response'), not by a per-conversation mask or a Guard's state."""
    if any(hp._forward_hooks for hp in model.hook_dict.values()):
        return False
    return all(
        isinstance(g, (Steering, Ablation, Capping)) and isinstance(g.positions, str)
        for g in as_list(steer)
    )


MIN_SHARED = 8
"""Fewest extra tokens a cluster's common prefix must have to be computed once for it."""


def prefix_plan(prompts: Sequence[Sequence[int]]) -> tuple[int, list[int], list[int]]:
    """How to prefill distinct prompts with their shared prefixes computed once.

    Returns (common, cluster_of, cluster_len): the first `common` tokens are shared by every
    prompt; prompt i belongs to cluster `cluster_of[i]`, whose first `cluster_len[c]` tokens
    (>= common) are shared by all its members. Clusters are runs of the prompts in content
    order whose common prefix is at least `MIN_SHARED` tokens longer than `common` (else a
    prompt stands alone with `cluster_len = common`). Every prompt keeps at least its last
    token outside any shared prefix, since its logits are needed.
    """
    if not prompts:
        return 0, [], []
    shortest = min(len(p) for p in prompts)
    as_lists = [list(p) for p in prompts]
    common = max(0, min(_lcp(min(as_lists), max(as_lists)), shortest - 1))  # lexicographic extremes
    order = sorted(range(len(prompts)), key=lambda i: as_lists[i])
    cluster_of = [0] * len(prompts)
    cluster_len: list[int] = []
    run: list[int] = []
    shared = 0

    def close() -> None:
        cluster_len.append(shared if len(run) > 1 else common)
        for i in run:
            cluster_of[i] = len(cluster_len) - 1

    for i in order:
        if run:
            joined = min(shared, _lcp(prompts[run[0]], prompts[i]), len(prompts[i]) - 1)
            if joined >= common + MIN_SHARED:
                run.append(i)
                shared = joined
                continue
            close()
        run, shared = [i], len(prompts[i]) - 1
    close()
    return common, cluster_of, cluster_len


PADDING_WASTE = 1.25
"""Largest (batch x longest) / (real tokens) a prefill batch may have before it is split."""


def length_batches(lengths: Sequence[int]) -> list[list[int]]:
    """Indices of `lengths` in batches of similar length (longest first): a left-padded batch
    computes every row at its longest row's length, so a batch closes before its padded size
    exceeds `PADDING_WASTE` times its real tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    total = 0
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= PADDING_WASTE * (total + lengths[i]):
            batches[-1].append(i)
            total += lengths[i]
        else:
            batches.append([i])
            total = lengths[i]
    return batches


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


__all__ = ["MIN_SHARED", "PADDING_WASTE", "length_batches", "prefix_plan", "rows_interchangeable"]
