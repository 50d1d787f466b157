"""Running generated samples (RULER, Phonebook) through a backend, scoring them, and reporting a table
(lengths x tasks, with the average, as the paper's tables), JSON and a plot of score against length.

Greedy decoding, every sample of a (task, budget) batch in flight at once. Under torchrun each rank takes
every world_size-th sample and the scores are gathered on every rank (torch.distributed must be initialised
by the caller, as `sambay eval` does when WORLD_SIZE > 1).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sambay.engine import SamplingParams
from sambay.eval.sample import Sample


@dataclass
class Scored:
    task: str
    length: int
    index: int
    score: float
    prediction: str
    answers: tuple[str, ...]


def shard(items: Sequence, rank: int | None = None, world: int | None = None) -> list:
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    return list(items[rank::world])


def gather(items: list) -> list:
    """Every rank's items on every rank (the identity without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def evaluate_samples(backend, samples: Sequence[Sample], score: Callable[[str, str, Sequence[str]], float]) -> list[Scored]:
    """Greedy completions of `samples` (this rank's share), scored by score(task, prediction, answers)."""
    mine = shard(samples)
    by_budget: dict[int, list[Sample]] = defaultdict(list)
    for s in mine:
        by_budget[s.max_new_tokens].append(s)
    out = []
    for budget, group in by_budget.items():
        prompts = [backend.tokenizer.encode(s.prompt) for s in group]
        completions = backend.generate(prompts, SamplingParams(temperature=0, max_new_tokens=budget))
        for s, (c,) in zip(group, completions):
            out.append(Scored(s.task, s.length, s.index, score(s.task, c.text, s.answers), c.text, s.answers))
    return sorted(gather(out), key=lambda r: (r.task, r.length, r.index))


def table(results: Sequence[Scored], columns: dict[str, str] | None = None) -> dict[int, dict[str, float]]:
    """{length: {task: mean score x 100, ..., "avg": mean over the tasks}}."""
    sums: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        sums[r.length][r.task].append(r.score)
    rows = {}
    for length in sorted(sums):
        row = {task: 100 * sum(v) / len(v) for task, v in sums[length].items()}
        row["avg"] = sum(row.values()) / len(row)
        rows[length] = row
    return rows


def format_table(rows: dict[int, dict[str, float]], names: dict[str, str] | None = None, axis: str = "length") -> str:
    names = names or {}
    seen = [t for t in dict.fromkeys(t for row in rows.values() for t in row) if t != "avg"]
    tasks = sorted(seen, key=lambda t: list(names).index(t) if t in names else len(names)) + ["avg"]  # names' order
    width = max(9, *(len(names.get(t, t)) + 2 for t in tasks))
    head = f"{axis:>8}" + "".join(f"{names.get(t, t):>{width}}" for t in tasks)
    lines = [head]
    for length, row in rows.items():
        lines.append(f"{length:>8}" + "".join(f"{row[t]:>{width}.1f}" if t in row else f"{'-':>{width}}" for t in tasks))
    return "\n".join(lines)


def plot_scores(rows: dict[int, dict[str, float]], path, title: str, names: dict[str, str] | None = None) -> None:
    """Score against length, one line per task (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names or {}
    lengths = list(rows)
    tasks = [t for t in dict.fromkeys(t for row in rows.values() for t in row)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in tasks:
        ax.plot(lengths, [rows[n].get(t, float("nan")) for n in lengths], marker="o", lw=2.5 if t == "avg" else 1,
                label=names.get(t, t))
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set(xlabel="length", ylabel="score (%)", ylim=(-2, 102), title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
