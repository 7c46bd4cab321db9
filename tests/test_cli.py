"""The command line: exit codes, one-sentence errors, nothing saved on bad input, every output format."""

import json
import textwrap

import pytest
from click.testing import CliRunner

from localpanel import api
from localpanel.cli import cli
from localpanel.engine.llama import LlamaBackend
from localpanel.engine.scripted import ScriptedBackend
from localpanel.panel.protocol import DebateSettings
from localpanel.runs.transcript import Transcript
from localpanel.weights.registry import load_registry
from localpanel.weights.store import Store

from .ggufdata import sha, tiny_gguf
from .hubserver import COMMIT, HubServer

TINY = tiny_gguf("tiny")


def invoke(*args, **kw):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    (tmp_path / "tiny.gguf").write_bytes(TINY)
    (tmp_path / "models.yaml").write_text(textwrap.dedent(f"""\
        models:
          tiny:
            sha256: {sha(TINY)}
            size: {len(TINY)}
            license: mit
            sources: [file://tiny.gguf]
        panels:
          solo:
            participants: [{{name: One, model: tiny}}]
        default_panel: solo
        """))
    monkeypatch.setenv("LOCALPANEL_MODELS", str(tmp_path / "models.yaml"))  # this file alone, nothing layered
    return tmp_path / "models.yaml"


def test_models_json_and_pull_twice(tiny_registry):
    rows = json.loads(invoke("models", "--json").output)
    assert rows[0]["name"] == "tiny" and rows[0]["present"] is False and rows[0]["path"] is None
    assert {"name", "sha256", "size", "present", "path", "verified", "license", "sources"} <= set(rows[0])
    first = invoke("pull")
    assert first.exit_code == 0 and "tiny: fetched from file://" in first.output
    again = invoke("pull", "tiny")
    assert again.exit_code == 0 and "tiny: already present and verified, nothing to do" in again.output
    rows = json.loads(invoke("models", "--json").output)
    assert rows[0]["present"] and rows[0]["verified"] and rows[0]["path"].endswith(f"{sha(TINY)}.gguf")
    table = invoke("models").output
    assert "tiny" in table and sha(TINY)[:12] in table and "verified" in table


def test_pull_errors_are_one_sentence_with_exit_codes(tiny_registry, tmp_path):
    unknown = invoke("pull", "gpt-9")
    assert unknown.exit_code == 2
    assert unknown.output.startswith("Error: Unknown model 'gpt-9' (known models: tiny)")
    (tmp_path / "tiny.gguf").write_bytes(TINY[:-10] + b"0123456789")
    bad = invoke("pull", "tiny")
    assert bad.exit_code == 1
    assert "Error: Could not get model 'tiny': file://" in bad.output and "gave sha256" in bad.output
    assert "Traceback" not in bad.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("models:\n  x:\n    sha256: abc\n    sources: [file://a.gguf]\n")
    result = invoke("--models", str(broken), "models")
    assert result.exit_code == 2 and f"Error: {broken}:3: models.x.sha256: sha256 must be 64 hexadecimal characters" in result.output


def test_add_appends_a_pinned_entry(tiny_registry, monkeypatch):
    with HubServer() as hub:
        fancy = tiny_gguf("fancy")
        hub.add("someone/models", "Fancy-Model.Q4.gguf", fancy)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        result = invoke("add", "hf://someone/models/Fancy-Model.Q4.gguf")
    assert result.exit_code == 0, result.output
    assert "Added fancy-model.q4 to" in result.output
    spec = load_registry(tiny_registry).model("fancy-model.q4")
    assert spec.sha256 == sha(fancy) and spec.size == len(fancy)
    assert spec.sources[0].revision == COMMIT
    assert "license: mit" in tiny_registry.read_text()  # the rest of the file is untouched


@pytest.mark.parametrize(
    "args, message",
    [
        (["Q?", "-o", "Yes"], "A vote needs at least 2 options, got 1"),
        (["Q?"] + [a for i in range(27) for a in ("-o", f"opt{i}")], "At most 26 options are allowed, got 27"),
        (["Q?", "-o", "Yes", "-o", "YES"], "Options 'Yes' and 'YES' are the same"),
        (["Q?", "-o", "Yes", "-o", " "], "An option is empty or only whitespace"),
        (["  ", "-o", "Yes", "-o", "No"], "The question is empty"),
        (["Q?", "--panel", "nope"], "Unknown panel 'nope'"),
        (["Q?", "--max-memory", "lots"], "'lots' is not a size"),
    ],
)
def test_poll_bad_input_exits_2_and_saves_nothing(args, message, monkeypatch):
    monkeypatch.setattr(LlamaBackend, "_model", lambda *a: pytest.fail("no model may load"))
    result = invoke("poll", *args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {message}")
    assert not (Store().runs_dir).exists()


def test_poll_on_a_model_not_pulled_names_the_pull_to_run():
    result = invoke("poll", "Q?")
    assert result.exit_code == 2
    assert result.output == ("Error: Model 'qwen2.5-coder-1.5b' is not pulled yet (sha256 cc324af070c2…); "
                             "run `localpanel pull qwen2.5-coder-1.5b`.\n")


@pytest.mark.real
def test_question_too_long_for_the_context_is_refused_before_any_model_loads(store_with_weights, monkeypatch):
    monkeypatch.setattr(LlamaBackend, "_model", lambda *a: pytest.fail("no model may load"))
    question = "Why? " + "Consider all of this carefully and in detail. " * 70
    result = invoke("poll", question, "--ctx-size", "512", "--panel", "tiny")
    assert result.exit_code == 2, result.output
    assert "The question does not fit SmolLM2 Skeptic's context" in result.output
    assert "has 512" in result.output
    assert not store_with_weights.runs_dir.exists()


@pytest.fixture
def saved_run(tiny_registry):
    registry = load_registry(tiny_registry)
    store = Store()
    store.pull(registry.model("tiny"))
    backend = ScriptedBackend().enqueue("One", {"vote": "<b>Yes</b>", "rationale": "Because <script>alert(1)</script> & more."})
    return api.start_run("Is <script> safe?", ["<b>Yes</b>", "No"], registry=registry, store=store, backend=backend,
                         settings=DebateSettings(), with_moderator=False)


def test_show_renders_every_format(saved_run, tmp_path):
    text = invoke("show", saved_run.id).output
    assert "Result: Unanimous — <b>Yes</b> (1/1 votes)" in text and "One · tiny" in text
    md = invoke("show", saved_run.id, "--format", "markdown").output
    assert md.startswith("# Is \\<script\\> safe?") and "| Option | Votes |" in md  # shown as text, never as a tag
    html = invoke("show", saved_run.id, "--format", "html").output
    assert "<script>" not in html and "&lt;script&gt;" in html and html.startswith("<!doctype html>")
    assert "http" not in html  # self-contained: no external assets
    data = json.loads(invoke("show", saved_run.id, "--json").output)
    assert Transcript.model_validate(data).id == saved_run.id
    out = tmp_path / "result.md"
    assert invoke("show", "last", "--format", "markdown", "--out", str(out)).exit_code == 0
    assert out.read_text() == md
    missing = invoke("show", "no-such-run")
    assert missing.exit_code == 1 and "No run 'no-such-run'" in missing.output
    listing = invoke("runs").output
    assert saved_run.id in listing and "Unanimous" in listing


@pytest.mark.real
def test_real_poll_on_the_tiny_panel(store_with_weights):
    result = invoke("poll", "Is it hypocrisy that AI labs complain about distillation?", "-o", "Yes", "-o", "No",
                    "--json", "-q", "--panel", "tiny")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["name"] for p in data["participants"]] == ["SmolLM2 Skeptic", "SmolLM2 Optimist", "Gemma Pragmatist", "Gemma Ethicist"]
    turns = data["rounds"][0]["turns"]
    assert all(t["vote"] in ("Yes", "No") and t["failure"] is None for t in turns)
    assert sum(data["result"]["counts"].values()) == 4
    assert data["summary"] and set(data["strongest_arguments"]) <= {"Yes", "No"}
    assert data["summary"].startswith(data["moderator"]["facts"])
    env = data["environment"]
    assert env["llama_cpp_python"] == "0.3.36" and "AVX2 = 1" in env["llama_cpp_system_info"] and env["threads"] >= 1
    again = invoke("show", data["id"])
    assert again.exit_code == 0 and data["result"]["line"] in again.output
