// localpanel's live page. Every string from a model or a user goes into the page as text (textContent), never as
// markup; the only markup inserted is the charts' SVG, which the server builds with every label escaped.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // {id, source, seen:Set, rounds, timer}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

async function api(path, body) {
  const init = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({error: `The server answered ${response.status}.`}));
  if (!response.ok) throw new Error(data.error || `The server answered ${response.status}.`);
  return data;
}

// -- the form ---------------------------------------------------------------------------------------------

async function loadCatalog() {
  const select = $("panel");
  try {
    const catalog = await api("/api/catalog");
    select.replaceChildren();
    for (const panel of catalog.panels) {
      const seats = panel.seats.map((s) => s.model).join(", ");
      const option = el("option", null, `${panel.name}${panel.ready ? "" : " (weights not pulled)"} · ${seats}`);
      option.value = panel.name;
      option.selected = panel.default;
      select.append(option);
    }
  } catch (err) {
    $("form-error").textContent = err.message;
  }
}

async function submit(event) {
  event.preventDefault();
  $("form-error").textContent = "";
  const options = $("options").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const body = {question: $("question").value, options, panel: $("panel").value, rounds: Number($("rounds").value) || 1,
                seed: $("seed").value === "" ? null : Number($("seed").value), open: $("open").checked};
  $("go").disabled = true;
  try {
    const snap = await api("/api/runs", body);
    if (location.hash.slice(1) === snap.run_id) watch(snap.run_id);
    else location.hash = snap.run_id; // the hashchange handler watches it
    loadRuns();
  } catch (err) {
    $("form-error").textContent = err.message;
  } finally {
    $("go").disabled = false;
  }
}

// -- watching a run ---------------------------------------------------------------------------------------

function stopWatching() {
  if (!current) return;
  if (current.source) current.source.close();
  if (current.timer) clearTimeout(current.timer);
  current = null;
}

function setState(text) { $("live-state").textContent = text; }
function setProgress(text) { $("progress").textContent = text; }

function where(e) { return e.rounds > 1 ? `Round ${e.round}/${e.rounds} · ` : ""; }

function addBallot(b) {
  const key = `${b.round}/${b.participant}`;
  if (current.seen.has(key)) return;
  current.seen.add(key);
  // One group per round, the newest on top, so that what just landed is in view.
  let group = $("ballots").querySelector(`[data-round-group="${b.round}"]`);
  if (!group) {
    group = el("div", "round");
    group.dataset.roundGroup = String(b.round);
    if (current.rounds > 1) group.append(el("div", "round-head", `Round ${b.round}`));
    const older = [...$("ballots").children].find((g) => Number(g.dataset.roundGroup) < b.round);
    $("ballots").insertBefore(group, older || null);
  }
  const card = el("div", b.failure ? "ballot failed" : "ballot");
  card.dataset.round = String(b.round);
  card.dataset.participant = b.participant;
  const who = el("div");
  who.append(el("span", "who", b.participant), " ", el("span", "p", b.model || ""));
  card.append(who);
  if (b.failure) {
    card.append(el("p", null, `Abstained: ${b.failure}`));
  } else {
    const vote = el("div", "vote", `Vote: ${b.vote}`);
    const p = b.confidence && b.confidence[b.vote];
    if (p !== undefined) {
      const bar = el("span", "bar");
      bar.style.width = `${Math.round(120 * p)}px`;
      vote.append(bar, el("span", "p", ` ${Math.round(100 * p)}%`));
    }
    card.append(vote);
    if (b.attributed_to) card.append(el("div", "p", `Persuaded by ${b.attributed_to}`));
    card.append(el("p", "rationale", b.rationale));
  }
  group.append(card);
}

async function refreshCharts(id) {
  if (!current || current.rounds < 2) return;
  try {
    const charts = await api(`/api/runs/${encodeURIComponent(id)}/charts`);
    if (!current || current.id !== id) return;
    $("votes-chart").innerHTML = charts.votes;           // built server-side, labels escaped
    $("persuasion-chart").innerHTML = charts.persuasion; // idem
  } catch (err) { /* the charts are a view; the ballots are the record */ }
}

function onEvent(id, e) {
  if (e.type === "turn_started") setProgress(`${where(e)}${e.participant} (${e.model}) is voting…`);
  else if (e.type === "tokens") setProgress(`${where(e)}${e.participant} · ${e.tokens} tokens` + (e.tokens_per_s == null ? "" : ` · ${e.tokens_per_s.toFixed(1)} tok/s`));
  else if (e.type === "ballot") {
    addBallot(e);
    setState("Running");
    setProgress(`${where(e)}${e.participant} ${e.failure ? "abstained" : "voted " + e.vote}`);
  } else if (e.type === "round_finished") {
    const counts = Object.entries(e.counts).map(([o, n]) => `${o} ${n}`).join(" · ");
    setProgress(`Round ${e.round}/${e.rounds} done: ${e.label}${e.winner ? " — " + e.winner : ""} (${counts})`);
    refreshCharts(id);
  } else if (e.type === "moderator") setProgress("The moderator has written the summary.");
}

async function watch(id) {
  stopWatching();
  current = {id, source: null, seen: new Set(), rounds: 1, timer: null};
  $("live").hidden = false;
  $("ballots").replaceChildren();
  $("result").replaceChildren();
  $("votes-chart").replaceChildren();
  $("persuasion-chart").replaceChildren();
  $("replay-result").textContent = "";
  setProgress("");
  let snap;
  try {
    snap = await api(`/api/runs/${encodeURIComponent(id)}`);
  } catch (err) {
    setState(err.message);
    return;
  }
  if (!current || current.id !== id) return;
  current.rounds = snap.rounds || 1;
  $("live-question").textContent = snap.question;
  for (const b of snap.ballots || []) addBallot(b);
  show(snap);
  if (snap.state === "queued" || snap.state === "running") follow(id);
}

function follow(id) {
  const source = new EventSource(`/api/runs/${encodeURIComponent(id)}/events`);
  current.source = source;
  source.addEventListener("run", (msg) => { if (current && current.id === id) onEvent(id, JSON.parse(msg.data)); });
  source.addEventListener("state", async () => {
    source.close();
    if (!current || current.id !== id) return;
    const snap = await api(`/api/runs/${encodeURIComponent(id)}`).catch(() => null);
    if (snap && current && current.id === id) {
      for (const b of snap.ballots || []) addBallot(b);
      show(snap);
    }
    loadRuns();
  });
  const poll = async () => { // while queued no event comes: say where it stands in the queue
    if (!current || current.id !== id) return;
    const snap = await api(`/api/runs/${encodeURIComponent(id)}`).catch(() => null);
    if (snap && snap.state === "queued") { show(snap); current.timer = setTimeout(poll, 2000); }
  };
  current.timer = setTimeout(poll, 2000);
}

function show(snap) {
  const state = {queued: "Queued", running: "Running", finished: "Finished", interrupted: "Interrupted", failed: "Failed"}[snap.state] || snap.state;
  if (snap.state === "queued") {
    setState(`Queued: ${snap.queue_position} run(s) ahead, waiting for ${snap.waiting_for}. One run at a time on this machine.`);
  } else setState(state + (snap.error ? `: ${snap.error}` : ""));
  const link = $("card-link");
  link.hidden = snap.state !== "finished";
  link.href = `/runs/${encodeURIComponent(snap.run_id)}`;
  $("resume").hidden = snap.state !== "interrupted";
  $("replay").hidden = snap.state !== "finished";
  if (snap.state === "finished" && snap.result) {
    setProgress("");
    const result = $("result");
    result.replaceChildren(el("p", "result-line", snap.result.line));
    if (snap.result.summary) result.append(el("p", "summary", snap.result.summary));
    refreshCharts(snap.run_id);
  }
  if (snap.state === "interrupted" && snap.resume) setProgress(`Resume it here, or with: ${snap.resume}`);
}

async function resume() {
  if (!current) return;
  const id = current.id;
  try {
    await api(`/api/runs/${encodeURIComponent(id)}/resume`, {});
    watch(id);
  } catch (err) { setState(err.message); }
}

async function replay() {
  if (!current) return;
  const id = current.id;
  const out = $("replay-result");
  try {
    await api(`/api/runs/${encodeURIComponent(id)}/replay`, {});
    out.textContent = "Replaying every turn from the pinned weights…";
    const source = new EventSource(`/api/runs/${encodeURIComponent(id)}/replay/events`);
    source.addEventListener("run", (msg) => {
      const e = JSON.parse(msg.data);
      if (e.type === "ballot") out.textContent = `Replaying… ${e.participant}, round ${e.round}: ${e.vote ?? "abstained"}`;
    });
    source.addEventListener("state", async () => {
      source.close();
      const snap = await api(`/api/runs/${encodeURIComponent(id)}/replay`);
      const r = snap.replay;
      if (!r) out.textContent = `Replay ${snap.state}${snap.error ? ": " + snap.error : ""}`;
      else if (r.identical) out.textContent = `Replay: identical (${r.turns_compared} turns compared, ${r.seconds} s).`;
      else out.textContent = `Replay diverged at round ${r.divergence.round}, ${r.divergence.participant}, character ${r.divergence.at_character}.`;
    });
  } catch (err) { out.textContent = err.message; }
}

// -- past runs --------------------------------------------------------------------------------------------

let searchTimer = null;
async function loadRuns() {
  const q = $("search").value.trim();
  let rows;
  try { rows = await api(`/api/runs?q=${encodeURIComponent(q)}`); } catch (err) { return; }
  const list = $("run-list");
  list.replaceChildren();
  for (const r of rows) {
    const item = el("li");
    const link = el("a", null, r.result);
    link.href = `#${r.id}`;
    item.append(link, el("span", "tag", `${r.kind} · ${r.state || ""}`), el("span", "q", r.question));
    list.append(item);
  }
  if (!rows.length) list.append(el("li", "q", q ? "No run matches." : "No runs yet."));
}

window.addEventListener("hashchange", () => { const id = decodeURIComponent(location.hash.slice(1)); if (id) watch(id); });
document.addEventListener("DOMContentLoaded", () => {
  $("run-form").addEventListener("submit", submit);
  $("resume").addEventListener("click", resume);
  $("replay").addEventListener("click", replay);
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadRuns, 200); });
  loadCatalog();
  loadRuns();
  const id = decodeURIComponent(location.hash.slice(1));
  if (id) watch(id);
});
