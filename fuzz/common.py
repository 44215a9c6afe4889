"""What every harness shares: the seed corpus (tests/corpus), the entry
point, and the one check that only the declared error types escape.

A harness is `fuzz/TARGET.py`: it imports its target under atheris's
instrumentation, defines one_input(data) (which raises only on a finding)
and seeds() (bytes taken from tests/corpus), and ends with main().  Run as

    python fuzz/TARGET.py --write-seeds DIR      the seeds, one file each
    python fuzz/TARGET.py [libFuzzer options] DIR...   fuzz (atheris)

fuzz/run drives the campaign; docs/fuzzing.md records it.
"""

from __future__ import annotations

import hashlib
import pathlib
import sys
from typing import Callable, Iterable

import atheris

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
sys.path.insert(0, str(ROOT))   # the checkout's sendgate, not an installed copy


class Finding(AssertionError):
    """A property did not hold."""


def corpus_messages() -> list[bytes]:
    """Every message of the RCPTHDR corpus, as bytes."""
    return [p.read_bytes() for p in sorted(CORPUS.rglob("*.eml"))]


def header_values(names: Iterable[str] | None = None) -> list[bytes]:
    """Field values from the corpus (of those names, else of every field)."""
    from sendgate.policy.message import encode, split_message
    wanted = None if names is None else {n.lower() for n in names}
    out = []
    for message in corpus_messages():
        for field in split_message(message)[0]:
            if wanted is None or field.name.lower() in wanted:
                out.append(encode(field.value))
    return out


def write_seeds(seeds: Iterable[bytes], directory: str) -> int:
    path = pathlib.Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    n = 0
    for seed in seeds:
        (path / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        n += 1
    return n


def main(one_input: Callable[[bytes], None], seeds: Callable[[], list[bytes]]) -> None:
    if sys.argv[1:2] == ["--write-seeds"]:
        print(write_seeds(seeds(), sys.argv[2]))
        return
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
