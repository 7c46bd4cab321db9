"""The public face (issue 33.4): ``import localpanel`` is the whole API a caller needs, every name in ``__all__``
typed and documented; the stage paths are inside the house."""

import inspect
import json
import os
import subprocess
import sys

import pytest

import localpanel

from .test_protocol import ballot, env  # noqa: F401  (the four-seat scripted panel)


def test_every_public_name_resolves_and_every_call_is_typed_and_documented():
    assert localpanel.__all__[0] == "__version__" and len(localpanel.__all__) == len(set(localpanel.__all__))
    for name in localpanel.__all__[1:]:
        value = getattr(localpanel, name)
        assert value.__doc__, name
        if inspect.isfunction(value):
            hints = inspect.signature(value).parameters
            assert all(p.annotation is not inspect.Parameter.empty for p in hints.values()), name
    assert set(dir(localpanel)) >= set(localpanel.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        localpanel.nope  # noqa: B018


def test_importing_localpanel_loads_neither_llama_cpp_nor_a_stage():
    done = subprocess.run([sys.executable, "-c", "import sys, localpanel; print(sorted(m for m in sys.modules "
                           "if m.startswith(('llama_cpp', 'localpanel.')) ))"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.replace("'", '"')) == ["localpanel._moved", "localpanel._version"]


def test_a_poll_and_a_debate_from_the_face_with_the_scripted_panel(env, monkeypatch):  # noqa: F811
    from localpanel import api
    from localpanel.engine.scripted import ScriptedBackend

    registry, store = env
    monkeypatch.setattr(api, "_backend", lambda runtime: ScriptedBackend(default=lambda req: ballot("Spaces", who=False)))
    t = localpanel.poll("Tabs or spaces?", ["Tabs", "Spaces"], models_file=registry.path, moderator=False, seed=3)
    assert t.result.line == "Unanimous — Spaces (4/4 votes)" and t.settings.seed == 3 and t.kind == "poll"
    d = localpanel.debate("Tabs or spaces?", ["Tabs", "Spaces"], rounds=2, models_file=registry.path, moderator=False,
                          settings=localpanel.DebateSettings(early_stop=False))
    assert d.kind == "debate" and len(d.rounds) == 2
    assert localpanel.load(d.id).id == d.id and localpanel.replay(d.id).identical
    with pytest.raises(localpanel.InputError, match="at least 2 options"):
        localpanel.poll("Tabs?", ["Tabs"], models_file=registry.path)


@pytest.mark.real
def test_three_lines_in_a_fresh_interpreter_debate_on_the_tiny_panel(store_with_weights, tmp_path):
    """The README's example, as written, in a new process that knows only `import localpanel`."""
    code = ('import localpanel\n'
            't = localpanel.debate("Tabs or spaces?", ["Tabs", "Spaces"], panel="tiny", rounds=2)\n'
            'print(t.result.line)\n')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "LOCALPANEL_HOME": str(store_with_weights.home)})
    assert done.returncode == 0, done.stderr
    assert any(label in done.stdout for label in ("Unanimous", "Majority", "Plurality", "Tie", "Supermajority"))
    assert len(list(store_with_weights.runs_dir.iterdir())) == 1
