"""Context files (--context) on a scripted backend: read before the question, hashed, cut to fit with a notice,
refused in one sentence when bad, and a changed or missing file refused on resume and replay."""

import hashlib

import pytest
from click.testing import CliRunner

from localpanel import api
from localpanel.api.request import RunRequest
from localpanel.cli import cli
from localpanel.engine.scripted import ScriptedBackend
from localpanel.errors import InputError, RunError
from localpanel.panel.protocol import DebateSettings
from localpanel.show.render import render

from .test_protocol import NAMES, env  # noqa: F401  (the fixture)

DOC = "The committee met on 3 March and chose Canberra as the site of the new capital.\n"


def voter(vote="Yes"):
    def answer(request):
        b = {"vote": vote, "rationale": "It says so in the document."}
        if "attributed_to" in request.schema_["properties"]:
            b["attributed_to"] = None
        return b
    return answer


def ask(env, backend, context, **settings):  # noqa: F811
    registry, store = env
    return api.run(RunRequest(question="Was Canberra chosen?", context=context, moderator=False,
                              settings=DebateSettings(**settings)), registry=registry, store=store, backend=backend)


def test_every_seat_reads_the_documents_before_the_question_and_the_manifest_pins_them(env, tmp_path):  # noqa: F811
    doc = tmp_path / "minutes.txt"
    doc.write_text(DOC)
    backend = ScriptedBackend(default=voter())
    t = ask(env, backend, [doc])
    first = [r.messages[1].content for r in backend.requests]
    assert len(first) == 4 and all(c.index("Canberra as the site") < c.index("Question: Was Canberra chosen?") for c in first)
    (d,) = t.documents
    assert d.sha256 == hashlib.sha256(DOC.encode()).hexdigest() and d.size == len(DOC) and d.read == d.chars == len(DOC)
    for fmt in ("text", "markdown", "html"):
        assert "minutes.txt" in render(t, fmt) and "read whole" in render(t, fmt)


def test_a_document_too_long_for_a_seat_is_cut_with_a_notice_and_one_that_leaves_no_room_is_refused(env, tmp_path):  # noqa: F811
    long = tmp_path / "long.txt"
    long.write_text("A fact about the capital. " * 400)  # 10,400 characters: about 2,600 tokens as the script counts
    t = ask(env, ScriptedBackend(default=voter(), context_length=2048), [long])
    (d,) = t.documents
    assert 0 < d.read < d.chars and "cut to fit" in render(t, "text")
    registry, store = env
    before = sorted(store.runs_dir.iterdir())
    with pytest.raises(InputError, match="leave no room for the ballots"):
        ask(env, ScriptedBackend(default=voter(), context_length=600), [long])
    assert sorted(store.runs_dir.iterdir()) == before


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "No context file"),
    (lambda p: p.write_bytes(b"\x89PNG\x00\x01"), "is binary, not text"),
    (lambda p: p.write_text("  \n"), "is empty"),
    (lambda p: p.write_bytes(b"caf\xe9"), "is not UTF-8 text"),
])
def test_bad_context_files_are_one_sentence_and_nothing_is_written(env, tmp_path, make, message):  # noqa: F811
    path = tmp_path / "doc.txt"
    make(path)
    registry, store = env
    with pytest.raises(InputError, match=message):
        ask(env, ScriptedBackend(default=voter()), [path])
    assert not store.runs_dir.exists() or not any(store.runs_dir.iterdir())
    out = CliRunner().invoke(cli, ["poll", "Is it?", "--context", str(path)], env={"LOCALPANEL_HOME": str(store.home)})
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output


def test_a_changed_or_missing_context_file_is_named_and_replay_refuses_it(env, tmp_path):  # noqa: F811
    doc = tmp_path / "minutes.txt"
    doc.write_text(DOC)
    registry, store = env
    ask(env, ScriptedBackend(default=voter()), [doc])
    run = next(store.runs_dir.iterdir())
    assert api.replay(run, store=store, backend=ScriptedBackend(default=voter())).identical
    doc.write_text(DOC.replace("Canberra", "Sydney"))
    with pytest.raises(RunError, match="minutes.txt has changed"):
        api.replay(run, store=store, backend=ScriptedBackend(default=voter()))
    doc.unlink()
    with pytest.raises(RunError, match="minutes.txt, which is missing"):
        api.replay(run, store=store, backend=ScriptedBackend(default=voter()))
