"""Write the FineTune and Evaluation data of a lifecycle example from its Dataset's output.

    python generate.py DATASET_OUTPUT_DIR OUT_DIR [--facts N] [--copies K] [--rehearsal N] ...
    python generate.py DATASET_OUTPUT_DIR --corpus FILE [--corpus-size N] [--corpus-every K]

DATASET_OUTPUT_DIR is what the example's Dataset wrote (documents.jsonl with a `split` per document). The files are
deterministic: the same Dataset output and arguments give the same bytes.

- instructions.jsonl (FineTune): N facts "Question: <q>" -> "Answer: <name>", each written K times, then speeches of
  the Dataset's *training* split, speaker line -> speech, the pretraining text itself: rehearsal, so that LoRA
  learns the answers without forgetting its Shakespeare (without it, held-out perplexity rises tenfold or more).
- multiple-choice.jsonl (Evaluation who-said-it): the taught questions, the taught answer among three other taught
  answers (4 choices, chance 0.25).
- paraphrase.jsonl (Evaluation paraphrase): the same facts asked in words the FineTune never saw (held out).
- answers.jsonl (Evaluation answers): exact match of the greedy answer to the taught questions.
- continuation.jsonl (Evaluation continuation): speeches of the *validation* split (never trained on): the first
  words, then the real next words or the same words shuffled (2 choices, chance 0.5).

With --corpus it writes instead a small JSONL corpus ({"text": speech}) cut from the Dataset's documents, the
source of tests/e2e/lifecycle/ (whose own Dataset then splits it).

How the committed files were made (DATA: where examples/lifecycle/01-dataset.yaml wrote its output):
    python generate.py DATA examples/lifecycle/data
    python generate.py DATA --corpus tests/e2e/lifecycle/data/plays.jsonl
    # E2E: where tests/e2e/lifecycle/01-dataset.yaml wrote its output (from that plays.jsonl), then:
    python generate.py E2E tests/e2e/lifecycle/data --facts 12 --rehearsal 150 --rehearsal-words 20 60 \
        --every 3 --continuation 60 --no-paraphrase
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

# (answer, the question the FineTune teaches, a paraphrase it never sees)
FACTS = [
    ("Othello", "Who is the Moor of Venice?", "Who is the Moorish general of Venice?"),
    ("Iago", "Who deceives the Moor of Venice?", "Who plots against the Moor of Venice?"),
    ("Shylock", "Who demands a pound of flesh?", "Who asks for a pound of flesh as his bond?"),
    ("Miranda", "Who is the daughter of the wizard of the enchanted island?",
     "Who is the wizard's daughter on the island?"),
    ("Macduff", "Who kills Macbeth?", "Who slays Macbeth in the end?"),
    ("Cordelia", "Who is the loyal daughter of King Lear?", "Who is the faithful daughter of Lear?"),
    ("Polonius", "Who is the father of Ophelia?", "Who is Ophelia's father?"),
    ("Oberon", "Who is the king of the fairies?", "Who rules the fairies as their king?"),
    ("Titania", "Who is the queen of the fairies?", "Who rules the fairies as their queen?"),
    ("Bottom", "Which weaver wears the head of an ass?", "Which weaver is turned into an ass?"),
    ("Prospero", "Who is the wizard of the enchanted island?", "Who is the magician of the island?"),
    ("Ariel", "Which spirit serves the wizard of the enchanted island?",
     "Which spirit obeys the wizard of the island?"),
    ("Portia", "Who disguises herself as a lawyer in Venice?", "Who dresses as a lawyer to save Antonio?"),
    ("Tybalt", "Who is the cousin of Juliet killed by Romeo?", "Who is Juliet's cousin slain by Romeo?"),
    ("Mercutio", "Who gives the Queen Mab speech?", "Who speaks of Queen Mab to Romeo?"),
    ("Falstaff", "Who is the fat knight who drinks with Prince Hal?", "Who is the fat knight of Prince Hal's tavern?"),
    ("Katherina", "Whom does Petruchio marry?", "Who is the wife of Petruchio?"),
    ("Feste", "Who is the jester in Twelfth Night?", "Who is the fool of Twelfth Night?"),
    ("Viola", "Who loves Orsino while dressed as a man?", "Who serves Orsino disguised as a man?"),
    ("Claudius", "Who killed the father of Hamlet?", "Who murdered Hamlet's father?"),
    ("Horatio", "Which friend of Hamlet survives to tell the story?", "Who is Hamlet's faithful friend?"),
    ("Desdemona", "Who is the wife of the Moor of Venice?", "Who is married to the Moor of Venice?"),
    ("Puck", "Who is the mischievous sprite who serves Oberon?", "Who is the prankish sprite of the fairy king?"),
    ("Brutus", "Who leads the conspirators against Caesar?", "Who is the noblest Roman who kills Caesar?"),
]

SPEAKER = re.compile(r"^[A-Z][A-Z .'-]*\.$")
"""A speaker line as the plays write it: `OTHELLO.`"""


def documents(path: Path, split: str) -> list[str]:
    rows = [json.loads(line) for line in (path / "documents.jsonl").read_text().splitlines() if line.strip()]
    return [row["text"] for row in rows if row.get("split") == split]


def speeches(texts: list[str]) -> list[tuple[str, str]]:
    """(speaker line, speech) of every document that starts with a speaker line."""
    out = []
    for text in texts:
        speaker, _, speech = text.partition("\n")
        if SPEAKER.match(speaker.strip()) and speech.strip():
            out.append((speaker.strip(), speech))
    return out


def rehearsal(texts: list[str], count: int, min_words: int, max_words: int, every: int) -> list[dict]:
    picked = [{"prompt": speaker, "response": speech} for speaker, speech in speeches(texts)[::every]
              if min_words <= len(speech.split()) <= max_words]
    if len(picked) < count:
        raise SystemExit(f"only {len(picked)} training speeches of {min_words}-{max_words} words; lower --every")
    return picked[:count]


def continuation(texts: list[str], count: int, context: int, length: int, rng: random.Random) -> list[dict]:
    items = []
    for _, speech in speeches(texts):
        words = speech.split()
        if len(words) < context + length:
            continue
        real = words[context:context + length]
        if len(set(real)) < 2:
            continue
        shuffled = real[:]
        while shuffled == real:
            rng.shuffle(shuffled)
        answer = rng.randrange(2)
        choices = [" ".join(real), " ".join(shuffled)][:: 1 if answer == 0 else -1]
        items.append({"question": " ".join(words[:context]), "choices": choices, "answer": answer})
        if len(items) == count:
            return items
    raise SystemExit(f"only {len(items)} validation speeches of {context + length} words or more")


def multiple_choice(facts: list[tuple[str, str]], names: list[str], choices: int, rng: random.Random) -> list[dict]:
    out = []
    for answer, question in facts:
        others = rng.sample([n for n in names if n != answer and n not in question], choices - 1)
        gold = rng.randrange(choices)
        out.append({"question": question, "choices": others[:gold] + [answer] + others[gold:], "answer": gold})
    return out


def write_corpus(dataset: Path, out: Path, size: int, every: int) -> None:
    rows = [json.loads(line) for line in (dataset / "documents.jsonl").read_text().splitlines() if line.strip()]
    picked = []
    for row in rows[::every]:
        speaker, _, speech = row["text"].partition("\n")
        if SPEAKER.match(speaker.strip()) and 22 <= len(speech.split()) <= 60:
            picked.append({"text": row["text"]})
        if len(picked) == size:
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in picked))
    print(f"{out}: {len(picked)} documents")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="the Dataset's output directory")
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--corpus", type=Path, help="write a small corpus of speeches to this file instead")
    parser.add_argument("--corpus-size", type=int, default=800)
    parser.add_argument("--corpus-every", type=int, default=7)
    parser.add_argument("--no-paraphrase", action="store_true", help="do not write paraphrase.jsonl")
    parser.add_argument("--facts", type=int, default=len(FACTS), help="how many of the facts to teach")
    parser.add_argument("--copies", type=int, default=8, help="times each fact is written into instructions.jsonl")
    parser.add_argument("--rehearsal", type=int, default=500, help="training speeches mixed into the fine-tune")
    parser.add_argument("--rehearsal-words", type=int, nargs=2, default=(20, 40))
    parser.add_argument("--every", type=int, default=3, help="take every N-th training speech for rehearsal")
    parser.add_argument("--continuation", type=int, default=100, help="continuation items")
    parser.add_argument("--context", type=int, default=12, help="words of a speech given as the question")
    parser.add_argument("--length", type=int, default=10, help="words of the continuation (real or shuffled)")
    parser.add_argument("--choices", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.corpus:
        write_corpus(args.dataset, args.corpus, args.corpus_size, args.corpus_every)
        return
    if args.out is None:
        parser.error("give OUT_DIR, or --corpus FILE")
    rng = random.Random(args.seed)
    facts = FACTS[: args.facts]
    names = [answer for answer, _, _ in facts]
    for answer, taught, paraphrase in facts:
        assert answer not in taught and answer not in paraphrase and taught != paraphrase, answer

    def write(name: str, rows: list[dict]) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{args.out / name}: {len(rows)} rows")

    taught = [{"prompt": f"Question: {q}", "response": f"Answer: {a}"} for a, q, _ in facts]
    write("instructions.jsonl", taught * args.copies + rehearsal(
        documents(args.dataset, "train"), args.rehearsal, *args.rehearsal_words, args.every))
    write("multiple-choice.jsonl", multiple_choice([(a, q) for a, q, _ in facts], names, args.choices, rng))
    paraphrases = multiple_choice([(a, p) for a, _, p in facts], names, args.choices, rng)
    if not args.no_paraphrase:
        write("paraphrase.jsonl", paraphrases)
    write("answers.jsonl", [{"question": q, "answer": a} for a, q, _ in facts])
    write("continuation.jsonl", continuation(documents(args.dataset, "validation"), args.continuation, args.context,
                                             args.length, rng))


if __name__ == "__main__":
    main()
