"""Write a small corpus of our own (no third-party text): sentences of arithmetic on spelled-out numbers.

    python scripts/make_toy_corpus.py OUT.jsonl [--docs N] [--seed S]

Each document is a few facts such as "seven plus five is twelve." - enough structure for a tiny model to
show in a minute of CPU training that it learns (the loss falls and greedy completions become sensible).
"""

import argparse
import json
import random

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]


def fact(rng: random.Random) -> str:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        return f"{WORDS[a]} plus {WORDS[b]} is {WORDS[a + b]}."
    a, b = max(a, b), min(a, b)
    return f"{WORDS[a]} minus {WORDS[b]} is {WORDS[a - b]}."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--docs", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with open(args.out, "w") as f:
        for _ in range(args.docs):
            f.write(json.dumps({"text": " ".join(fact(rng) for _ in range(rng.randint(3, 8)))}) + "\n")


if __name__ == "__main__":
    main()
