"""Question sets: a JSONL file, or one generated (Du et al.'s arithmetic), checked before anything runs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from localpanel.errors import InputError
from localpanel.panel.protocol import Question

# Du et al. 2023, Table 1 (ChatGPT, 3 agents, 2 rounds), accuracy in percent; printed beside arithmetic runs.
DU_ET_AL = {
    "arithmetic": {"single": 67.0, "reflect": 72.1, "vote": 69.0, "debate": 81.8},
    "gsm8k": {"single": 77.0, "reflect": 75.0, "vote": 81.0, "debate": 85.0},
}


class EvalQuestion(BaseModel):
    """One question with its right answer: among ``options``, an integer when there are no options, or (open, with
    ``answers``) any of the accepted answers, matched after SQuAD's normalization."""

    model_config = ConfigDict(extra="forbid")
    id: str
    question: str
    options: list[str] = []
    answer: str
    answers: list[str] = []  # an open question's accepted answers (``answer`` is the first)

    @property
    def open(self) -> bool:
        return bool(self.answers) and not self.options

    @property
    def integer(self) -> bool:
        return not self.options and not self.answers


class QuestionSet(BaseModel):
    name: str  # "arithmetic" for generated sets, else the file's name
    source: str  # what was asked for: a path or "arithmetic:N"
    sha256: str = ""  # of the questions as JSONL: names exactly which questions were used
    questions: list[EvalQuestion]

    def with_sha(self) -> "QuestionSet":
        self.sha256 = hashlib.sha256(to_jsonl(self.questions).encode()).hexdigest()
        return self


def load_source(source: str, seed: int = 0) -> QuestionSet:
    """``arithmetic:N`` or a JSONL file of {"id", "question", "options"?, "answer"}."""
    if m := re.fullmatch(r"arithmetic(?::(\d+))?", source):
        return arithmetic(int(m.group(1) or 100), seed)
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"No question file {source!r}: give a JSONL file or arithmetic:N (e.g. arithmetic:100).")
    return QuestionSet(name=path.stem, source=str(path), questions=load_jsonl(path)).with_sha()


def to_jsonl(questions: list[EvalQuestion]) -> str:
    return "".join(json.dumps(q.model_dump(), ensure_ascii=False) + "\n" for q in questions)


def load_jsonl(path: Path) -> list[EvalQuestion]:
    """Every line checked; the first bad one stops everything with a sentence naming the line and the problem."""
    questions: list[EvalQuestion] = []
    ids: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read {path}: {exc}.") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{where}: not a JSON object ({exc.msg}).") from None
        if not isinstance(data, dict):
            raise InputError(f"{where}: not a JSON object.")
        questions.append(_question(data, where))
        qid = questions[-1].id
        if qid in ids:
            raise InputError(f"{where}: id {qid!r} is used twice (first on line {ids[qid]}); give every question its own id.")
        ids[qid] = n
    if not questions:
        raise InputError(f"{path} has no questions.")
    return questions


def _question(data: dict[str, Any], where: str) -> EvalQuestion:
    unknown = set(data) - {"id", "question", "options", "answer", "answers"}
    if unknown:
        raise InputError(f"{where}: unknown field {sorted(unknown)[0]!r} (fields: id, question, options, answer, answers).")
    if "answers" in data and not data.get("options"):  # an open question: any accepted answer is right
        answers = data["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise InputError(f"{where}: 'answers' must be a list of accepted answers (strings), at least one.")
        try:
            q = Question.checked(str(data.get("question") or ""), [], open=True)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        return EvalQuestion(id=str(data.get("id") or where), question=q.text, answer=answers[0].strip(),
                            answers=[a.strip() for a in answers])
    for field in ("id", "question", "answer"):
        if data.get(field) is None or data.get(field) == "":
            raise InputError(f"{where}: the field {field!r} is missing.")
    qid, answer, options = str(data["id"]), data["answer"], data.get("options")
    if options is None:
        if isinstance(answer, bool) or not re.fullmatch(r"-?\d+", str(answer).replace(",", "").strip()):
            raise InputError(f"{where}: without options the answer must be an integer, got {answer!r}.")
        answer = str(int(str(answer).replace(",", "").strip()))
        try:
            Question.checked(str(data["question"]), [], integer=True)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        return EvalQuestion(id=qid, question=str(data["question"]), answer=answer)
    if not isinstance(options, list) or not all(isinstance(o, (str, int, float)) for o in options):
        raise InputError(f"{where}: 'options' must be a list of strings.")
    try:
        q = Question.checked(str(data["question"]), [str(o) for o in options])
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    answer = str(answer).strip()
    if answer not in q.options:
        raise InputError(f"{where}: the answer {answer!r} is not one of the options {q.options}.")
    return EvalQuestion(id=qid, question=q.text, options=q.options, answer=answer)


def arithmetic(n: int, seed: int = 0) -> QuestionSet:
    """Du et al.'s task: a+b*c+d-e*f with six integers from randint(0, 30), drawn as their code draws them."""
    if not 1 <= n <= 100_000:
        raise InputError(f"arithmetic:{n}: ask for 1 to 100000 questions.")
    rng = np.random.RandomState(seed)
    questions = []
    for i in range(n):
        a, b, c, d, e, f = (int(x) for x in rng.randint(0, 30, size=6))
        questions.append(EvalQuestion(
            id=f"arith-{seed}-{i}",
            question=f"What is the result of {a}+{b}*{c}+{d}-{e}*{f}?",
            answer=str(a + b * c + d - e * f),
        ))
    return QuestionSet(name="arithmetic", source=f"arithmetic:{n}", questions=questions).with_sha()
