"""Reads runs for the web page and the MCP server: a run's snapshot (from the queue while it is there, from its
directory otherwise), its card, its live charts, the run list and the catalog of panels and models. Runs are the
ordinary run directories of the store, so a run the queue did not start (a CLI run, an earlier server) reads the
same way. Nothing here writes.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable

import localpanel.api as api
from localpanel.errors import InputError
from localpanel.runs.jobs import Job, JobKey, RunQueue
from localpanel.runs.transcript import build_transcript
from localpanel.runs.rundir import RunDir
from localpanel.show.charts import persuasion_chart, votes_chart
from localpanel.show.render import render, summary_text
from localpanel.weights.registry import Registry, shipped_registry_path, user_registry_path
from localpanel.weights.store import Store

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\Z")


def find(store: Store, run_id: str) -> RunDir:
    """A run of this store by id or unique id prefix; never a path, so that a caller reads only runs."""
    if not isinstance(run_id, str) or not _ID.match(run_id):
        raise InputError(f"{str(run_id)[:80]!r} is not a run id; list runs to see them.")
    return api.find_run(run_id, store.runs_dir, ids_only=True)


class RunReader:
    """The reading side: every call reads the store (and the queue, for jobs still in it) and writes nothing."""

    def __init__(self, store: Store, queue: RunQueue, registry: Callable[[], Registry]):
        self.store, self.queue, self.registry = store, queue, registry
        self.index = RunIndex(store)

    def find(self, run_id: str) -> RunDir:
        return find(self.store, run_id)

    def job(self, handle: str) -> Job | None:
        """The queue's job a client names: a run id, or RUN/replay."""
        return self.queue.get(JobKey.parse(handle))

    def snapshot(self, run_id: str) -> dict[str, Any]:
        """A run's state, its ballots so far and, once finished, its result: from the queue while it is there,
        from its directory otherwise."""
        key = JobKey.parse(run_id)
        if key.action == "replay":
            job = self.queue.get(key)
            if job is None:
                raise InputError(f"No replay of {key.run[:80]!r} was started by this server; start one first.")
            return self._job_fields(job)
        run = self.find(run_id)
        job = self.queue.get(JobKey(run.path.name))
        manifest = run.manifest()
        out: dict[str, Any] = {
            "run_id": run.path.name, "kind": manifest.kind, "question": manifest.question, "options": manifest.options,
            "rounds": manifest.settings.rounds, "participants": [p.name for p in manifest.participants],
            "path": str(run.path), "card_uri": f"localpanel://runs/{run.path.name}/card.md",
        }
        if job is not None and not (job.done and run.finished):
            out.update(self._job_fields(job))
            out["ballots"] = [e.model_dump() for e in job.log.since(0) if e.type == "ballot"]
        elif run.finished:
            out["state"] = "finished"
        else:
            out["state"] = "interrupted"
        if out["state"] == "interrupted":
            out["resume"] = f"localpanel {manifest.kind} --resume {run.path.name}"
        if "ballots" not in out:
            turns, _ = run.journal()
            names = {p.name: p.model for p in manifest.participants}
            out["ballots"] = [{"participant": t.participant, "model": names.get(t.participant), "round": t.round,
                               "vote": t.vote, "rationale": t.rationale, "attributed_to": t.attributed_to,
                               "confidence": t.confidence, "failure": t.failure} for t in turns]
        if out["state"] == "finished" and run.finished:
            t = run.transcript()
            out["result"] = {"line": t.result.line, "label": t.result.label, "winner": t.result.winner,
                             "counts": t.result.counts, "summary": summary_text(t)}
        return out

    def _job_fields(self, job: Job) -> dict[str, Any]:
        out: dict[str, Any] = {"state": job.state, "events": len(job.log.events)}
        if job.state == "queued":
            out["queue_position"] = self.queue.position(job)
            out["waiting_for"] = job.waiting_for or "the run ahead of it in this server's queue"
        if job.error:
            out["error"] = job.error
        if job.kind == "replay":
            out["run_id"], out["kind"] = job.id, "replay"
            if job.result is not None:
                out["replay"] = job.result
        return out

    def events(self, handle: str, since: int = 0) -> list[dict]:
        job = self.job(handle)
        return [e.model_dump() for e in job.log.since(since)] if job else []

    def card(self, run_id: str, fmt: str = "markdown") -> str:
        if fmt not in ("markdown", "json", "html", "text"):
            raise InputError(f"Unknown format {fmt!r}: markdown, json, html or text.")
        run = self.find(run_id)
        if not run.finished:
            raise InputError(f"Run {run.path.name} has not finished yet; wait for it, or resume it if it was interrupted.")
        return render(run.transcript(), fmt)

    def live_charts(self, run_id: str) -> dict[str, str]:
        """The votes-over-rounds chart and the who-moved-whom graph of the ballots so far, as inline SVG."""
        run = self.find(run_id)
        manifest = run.manifest()
        turns, _ = run.journal()
        partial = build_transcript(manifest, turns, "max_rounds", None, 0.0)
        return {"votes": votes_chart(partial), "persuasion": persuasion_chart(partial), "rounds": len(partial.rounds)}

    def runs(self, query: str = "", limit: int = 200) -> list[dict]:
        rows = self.index.rows()
        if query:
            words = query.lower().split()
            rows = [r for r in rows if all(w in (r["question"] + " " + r["result"] + " " + r["id"]).lower() for w in words)]
        for r in rows:
            job = self.queue.get(JobKey(r["id"]))
            if job is not None and not job.done:
                r["state"] = job.state
        return rows[-limit:][::-1]

    def catalog(self) -> dict[str, Any]:
        """Panels and models, with where each comes from (the user's own additions included)."""
        registry = self.registry()
        labels = {str(shipped_registry_path()): "shipped", str(user_registry_path()): "yours"}

        def origin(key: str) -> str:
            path = str(registry.origins.get(key, registry.path))
            return labels.get(path, path)

        models = []
        for spec in registry.models.values():
            status = self.store.status(spec)
            models.append({"name": spec.name, "present": status.present, "verified": status.verified,
                           "size": status.size, "from": origin(f"models.{spec.name}"), "description": spec.description})
        panels = [{"name": p.name, "default": p.name == registry.default_panel, "from": origin(f"panels.{p.name}"),
                   "seats": [{"name": s.name, "model": s.model} for s in p.participants],
                   "ready": all(self.store.status(registry.model(s.model)).present for s in p.participants)}
                  for p in registry.panels.values()]
        return {"default_panel": registry.default_panel, "panels": panels, "models": models}


class RunIndex:
    """The store's runs as the search lists them, each row read again only when its files change (a search
    keystroke used to re-read every saved transcript)."""

    def __init__(self, store: Store):
        self.store = store
        self.cache: dict[str, tuple[tuple, dict | None]] = {}
        self.lock = threading.Lock()  # the page's request threads read and prune the cache at once

    @staticmethod
    def stamp(path) -> tuple:
        out = []
        for name in ("manifest.json", "transcript.json", "turns.jsonl"):
            try:
                st = (path / name).stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def rows(self) -> list[dict]:
        with self.lock:
            return self._rows()

    def _rows(self) -> list[dict]:
        runs_dir = self.store.runs_dir
        paths = sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []
        out, seen = [], set()
        for path in paths:
            key, stamp = str(path), self.stamp(path)
            seen.add(key)
            cached = self.cache.get(key)
            if cached is None or cached[0] != stamp:
                cached = self.cache[key] = (stamp, api.run_row(path))
            if cached[1] is not None:
                out.append(dict(cached[1]))
        for gone in set(self.cache) - seen:
            del self.cache[gone]
        return out
