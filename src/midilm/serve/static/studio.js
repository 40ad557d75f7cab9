// midilm studio: compose from text, play and download takes, continue them, and analyze / caption / ask about
// a MIDI file. Plain browser JavaScript against the server's own API; audio is rendered by the server.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const HISTORY_KEY = "midilm.history.v1";
const HISTORY_MAX = 30;
const PALETTE = ["#8b7cf6", "#38d9b0", "#f5a35c", "#5cb8f5", "#f26b9b", "#c3e65a", "#f5d65c", "#b07cf6",
  "#5cf5d2", "#f58b5c", "#7c9cf6", "#e65ae0", "#5ce67a", "#f5c05c", "#9ad1ff"];
const DRUM_COLOR = "#7f8aa3";
const EXAMPLES = [
  "A gentle lullaby in F major for piano and strings, slow and tender",
  "Upbeat funk groove with slap bass, electric guitar and drums at 112 bpm",
  "A melancholic waltz in A minor for violin and piano",
  "Epic cinematic theme with brass, strings and timpani",
  "Lo-fi jazz with electric piano, upright bass and brushed drums",
];

const state = {
  limits: null,
  instruments: [],
  selected: new Set(),
  n: 1,
  player: null, // {audio, take, raf}
  analysisFile: null,
  chat: [],
  currentHistory: null,
};

// --- small helpers -------------------------------------------------------------------------------------

function toast(message, kind = "info") {
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.textContent = message;
  $("#toasts").appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 7000 : 3500);
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("The server cannot be reached. Is `midilm serve` still running?");
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.detail) detail = body.detail;
    } catch (e) { /* not JSON: keep the status line */ }
    const err = new Error(detail);
    err.status = response.status;
    throw err;
  }
  return response;
}

function setBusy(button, busy) {
  button.classList.toggle("busy", busy);
  button.disabled = busy;
}

function b64ToBytes(b64) {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function midiBlob(b64) {
  return new Blob([b64ToBytes(b64)], { type: "audio/midi" });
}

function fmtTime(s) {
  s = Math.max(0, s || 0);
  return `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
}

function slug(text) {
  return (text || "midilm").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "midilm";
}

// --- piano roll ------------------------------------------------------------------------------------------

function colorsFor(notes) {
  const programs = [...new Set(notes.map((n) => n[4]))];
  const map = new Map();
  let k = 0;
  for (const p of programs) map.set(p, p === 128 ? DRUM_COLOR : PALETTE[k++ % PALETTE.length]);
  return map;
}

function drawRoll(canvas, notes, duration, bpm, beatsPerBar) {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(300, canvas.clientWidth || canvas.parentElement.clientWidth || 800);
  const height = canvas.clientHeight || 220;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#0b0e14";
  ctx.fillRect(0, 0, width, height);
  const total = Math.max(duration || 0, ...notes.map((n) => n[1]), 1);
  const pitched = notes.filter((n) => n[4] !== 128);
  const drums = notes.filter((n) => n[4] === 128);
  const drumBand = drums.length ? 34 : 0;
  let lo = 48, hi = 84;
  if (pitched.length) {
    lo = Math.min(...pitched.map((n) => n[2])) - 2;
    hi = Math.max(...pitched.map((n) => n[2])) + 2;
    if (hi - lo < 24) { const mid = (hi + lo) / 2; lo = mid - 12; hi = mid + 12; }
  }
  const rollH = height - drumBand;
  const rowH = rollH / (hi - lo + 1);
  const x = (t) => (t / total) * width;
  // black-key rows, then bar and beat lines
  for (let p = Math.floor(lo); p <= hi; p++) {
    if ([1, 3, 6, 8, 10].includes(((p % 12) + 12) % 12)) {
      ctx.fillStyle = "rgba(255,255,255,0.025)";
      ctx.fillRect(0, rollH - (p - lo + 1) * rowH, width, rowH);
    }
  }
  if (bpm > 0) {
    const beat = 60 / bpm;
    const perBar = beatsPerBar || 4;
    for (let i = 0, t = 0; t < total; i++, t = i * beat) {
      ctx.fillStyle = i % perBar === 0 ? "rgba(255,255,255,0.12)" : "rgba(255,255,255,0.04)";
      ctx.fillRect(Math.round(x(t)), 0, 1, height);
    }
  }
  if (drumBand) {
    ctx.fillStyle = "rgba(255,255,255,0.03)";
    ctx.fillRect(0, rollH, width, drumBand);
  }
  const colors = colorsFor(notes);
  const h = Math.max(2, Math.min(rowH - 1, 9));
  for (const [s, e, p, v, prog] of pitched) {
    ctx.globalAlpha = 0.55 + 0.45 * (v / 127);
    ctx.fillStyle = colors.get(prog);
    const y = rollH - (p - lo + 1) * rowH + (rowH - h) / 2;
    ctx.fillRect(x(s), y, Math.max(2, x(e) - x(s) - 0.5), h);
  }
  for (const [s, , p, v] of drums) {
    ctx.globalAlpha = 0.5 + 0.5 * (v / 127);
    ctx.fillStyle = DRUM_COLOR;
    const y = rollH + 3 + ((p - 35) % 10 + 10) % 10 * ((drumBand - 8) / 10);
    ctx.fillRect(x(s), y, 3, 3);
  }
  ctx.globalAlpha = 1;
  canvas.dataset.notes = String(notes.length);
  canvas.dataset.duration = String(total);
  return total;
}

function legend(el, notes) {
  el.innerHTML = "";
  const colors = colorsFor(notes);
  const counts = new Map();
  for (const n of notes) counts.set(n[4], (counts.get(n[4]) || 0) + 1);
  for (const [prog, color] of colors) {
    const span = document.createElement("span");
    const dot = document.createElement("i");
    dot.style.background = color;
    span.append(dot, document.createTextNode(programName(prog)));
    span.title = `${counts.get(prog)} notes`;
    el.appendChild(span);
  }
}

function programName(prog) {
  if (prog === 128) return "Drums";
  return (state.programNames && state.programNames[prog]) || `Program ${prog}`;
}

// --- takes and playback ------------------------------------------------------------------------------------

function stopPlayer() {
  const p = state.player;
  if (!p) return;
  p.audio.pause();
  cancelAnimationFrame(p.raf);
  p.take.classList.remove("playing");
  const btn = $(".play", p.take);
  btn.dataset.state = "paused";
  $(".glyph", btn).textContent = "▶";
  btn.setAttribute("aria-label", "Play");
  state.player = null;
}

async function togglePlay(take) {
  const btn = $(".play", take);
  if (state.player && state.player.take === take) { stopPlayer(); return; }
  stopPlayer();
  if (!take._audio) {
    setBusy(btn, true);
    btn.dataset.state = "loading";
    try {
      const form = new FormData();
      form.append("file", take._midi, "take.mid");
      const res = await api("/v1/render", { method: "POST", body: form });
      const url = URL.createObjectURL(await res.blob());
      take._audio = new Audio(url);
      take._audio.preload = "auto";
      take._audio.addEventListener("ended", () => { stopPlayer(); moveHead(take, 0); });
      take._audio.addEventListener("playing", () => { btn.dataset.state = "playing"; });
    } catch (e) {
      toast(`Playback failed: ${e.message}`, "error");
      btn.dataset.state = "stopped";
      return;
    } finally {
      setBusy(btn, false);
    }
  }
  const audio = take._audio;
  state.player = { audio, take, raf: 0 };
  take.classList.add("playing");
  $(".glyph", btn).textContent = "❚❚";
  btn.setAttribute("aria-label", "Pause");
  btn.dataset.state = "starting";
  try {
    await audio.play();
  } catch (e) {
    toast(`The browser refused to play audio: ${e.message}`, "error");
    stopPlayer();
    return;
  }
  const tick = () => {
    if (!state.player || state.player.take !== take) return;
    moveHead(take, audio.currentTime);
    state.player.raf = requestAnimationFrame(tick);
  };
  tick();
}

function moveHead(take, t) {
  const head = $(".playhead", take);
  const total = Number($(".pianoroll", take).dataset.duration) || 1;
  head.hidden = t <= 0;
  head.style.left = `${Math.min(100, (t / total) * 100)}%`;
  $(".time", take).textContent = `${fmtTime(t)} / ${fmtTime(take._duration)}`;
}

function makeTake(sample, title, meta, opts = {}) {
  const take = $("#take-template").content.firstElementChild.cloneNode(true);
  $(".take-title", take).textContent = title;
  $(".take-meta", take).textContent = meta;
  take._midi = midiBlob(sample.midi_base64);
  take._duration = sample.duration;
  take._sample = sample;
  const link = $(".act-download", take);
  link.href = URL.createObjectURL(take._midi);
  link.download = `${slug(opts.filename || title)}.mid`;
  const canvas = $(".pianoroll", take);
  const s = sample.settings || {};
  const draw = () => drawRoll(canvas, sample.notes, sample.duration, s.bpm, parseInt(String(s.time_signature || "4/4"), 10));
  requestAnimationFrame(draw);
  take._redraw = draw;
  legend($(".legend", take), sample.notes);
  $(".time", take).textContent = `0:00 / ${fmtTime(sample.duration)}`;
  $(".play", take).addEventListener("click", () => togglePlay(take));
  $(".roll-wrap", take).addEventListener("click", (ev) => {
    if (!take._audio) return;
    const r = ev.currentTarget.getBoundingClientRect();
    take._audio.currentTime = ((ev.clientX - r.left) / r.width) * (Number(canvas.dataset.duration) || 1);
    moveHead(take, take._audio.currentTime);
  });
  for (const [cls, fn] of [[".act-regenerate", opts.onRegenerate], [".act-continue", opts.onContinue],
    [".act-analyze", opts.onAnalyze]]) {
    const b = $(cls, take);
    if (fn) b.addEventListener("click", () => fn(take, b)); else b.remove();
  }
  return take;
}

// --- compose -----------------------------------------------------------------------------------------------

function readRequest() {
  const prompt = $("#prompt").value.trim();
  const req = {
    prompt,
    max_tokens: Number($("#max-tokens").value),
    temperature: Number($("#temperature").value),
    seconds: Number($("#seconds").value),
    n: state.n,
  };
  const seed = $("#seed").value.trim();
  if (seed !== "") req.seed = Number(seed);
  if (!$("#bpm-auto").checked) req.bpm = Number($("#bpm").value);
  if (state.selected.size) req.instruments = [...state.selected];
  if (!$("#steer").checked) req.steer = false;
  if (Number($("#cfg").value) !== 1) req.cfg = Number($("#cfg").value);
  return req;
}

function validate(req) {
  if (!req.prompt) return "Write a prompt first: a mood, a style, instruments, a tempo…";
  if (req.seed !== undefined && !(Number.isInteger(req.seed) && req.seed >= 0 && req.seed < 2 ** 32)) {
    return "The seed must be a whole number from 0 to 4294967295.";
  }
  return null;
}

async function generate(req, { label } = {}) {
  const problem = validate(req);
  if (problem) { toast(problem, "error"); $("#prompt").focus(); return; }
  const button = $("#generate");
  setBusy(button, true);
  $(".text", button).textContent = "Composing…";
  const placeholder = groupShell(label || req.prompt, "composing…");
  try {
    const res = await api("/v1/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(req),
    });
    const data = await res.json();
    const entry = { id: `${Date.now()}-${Math.random().toString(36).slice(2, 7)}`, created: Date.now(),
      kind: label ? "continue" : "generate", prompt: label || req.prompt, request: req, samples: data.samples,
      elapsed: data.elapsed_seconds };
    placeholder.remove();
    showEntry(entry, true);
    saveHistory(entry);
    revealNewest();
  } catch (e) {
    placeholder.remove();
    toast(e.message, "error");
    refreshEmpty();
  } finally {
    setBusy(button, false);
    $(".text", button).textContent = "Generate";
  }
}

async function continueTake(take, button, entry) {
  setBusy(button, true);
  button.textContent = "Continuing…";
  const req = entry.request || {};
  const form = new FormData();
  form.append("file", take._midi, "take.mid");
  form.append("prompt", entry.request ? entry.request.prompt : entry.prompt);
  form.append("max_tokens", String(req.max_tokens || 600));
  form.append("seconds", String(Math.min(req.seconds || 30, 60)));
  form.append("temperature", String(req.temperature || 1));
  if (req.bpm) form.append("bpm", String(req.bpm));
  if (req.instruments) form.append("instruments", req.instruments.join(","));
  const shell = groupShell(`Continuation of “${entry.prompt}”`, "continuing…");
  try {
    const res = await api("/v1/continue", { method: "POST", body: form });
    const data = await res.json();
    const next = { id: `${Date.now()}-c`, created: Date.now(), kind: "continue",
      prompt: `${entry.prompt} (continued)`, request: { ...req, prompt: entry.request ? entry.request.prompt : entry.prompt },
      samples: data.samples, elapsed: data.elapsed_seconds };
    shell.remove();
    showEntry(next, true);
    saveHistory(next);
    revealNewest();
  } catch (e) {
    shell.remove();
    toast(`Continue failed: ${e.message}`, "error");
  } finally {
    button.disabled = false;
    button.classList.remove("busy");
    button.textContent = "Continue";
  }
}

function groupShell(title, status) {
  const g = document.createElement("section");
  g.className = "group";
  g.innerHTML = `<div class="group-head"><span class="prompt"></span><span class="muted small"></span></div>
    <div class="take"><div class="roll-wrap loading" style="height:220px"></div></div>`;
  $(".prompt", g).textContent = title;
  $(".muted", g).textContent = status;
  $("#results-empty").hidden = true;
  $("#results").prepend(g);
  return g;
}

function showEntry(entry, fresh) {
  const results = $("#results");
  const existing = $(`.group[data-id="${entry.id}"]`);
  if (existing) { existing.scrollIntoView({ behavior: "smooth", block: "start" }); return; }
  const g = document.createElement("section");
  g.className = "group";
  g.dataset.id = entry.id;
  const head = document.createElement("div");
  head.className = "group-head";
  const p = document.createElement("span");
  p.className = "prompt";
  p.textContent = entry.prompt;
  const when = document.createElement("span");
  when.className = "muted small";
  when.textContent = new Date(entry.created).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    + (entry.elapsed ? ` · composed in ${entry.elapsed.toFixed(1)} s` : "");
  head.append(p, when);
  g.appendChild(head);
  entry.samples.forEach((sample, k) => {
    const s = sample.settings || {};
    const title = entry.samples.length > 1 ? `Take ${k + 1}` : "Take";
    const meta = [`${sample.duration.toFixed(1)} s`, s.bpm ? `${Math.round(s.bpm)} bpm` : null, s.time_signature,
      `${sample.notes.length} notes`, s.seed !== null && s.seed !== undefined ? `seed ${s.seed}` : null]
      .filter(Boolean).join(" · ");
    const take = makeTake(sample, title, meta, {
      filename: `${entry.prompt}-${k + 1}`,
      onRegenerate: entry.request && entry.kind !== "continue" ? () => {
        const req = { ...entry.request };
        delete req.seed;
        generate(req);
      } : null,
      onContinue: (t, b) => continueTake(t, b, entry),
      onAnalyze: (t) => { selectTab("analyze"); analyzeFile(new File([t._midi], `${slug(entry.prompt)}.mid`, { type: "audio/midi" })); },
    });
    g.appendChild(take);
  });
  results.prepend(g);
  $("#results-empty").hidden = true;
  markHistory(entry.id);
  if (!fresh) g.scrollIntoView({ behavior: "smooth", block: "start" });
}

function revealNewest() {
  const g = $("#results .group");
  if (!g) return;
  const r = g.getBoundingClientRect();
  if (r.top < 0 || r.top > window.innerHeight - 120) g.scrollIntoView({ behavior: "smooth", block: "start" });
}

function refreshEmpty() {
  $("#results-empty").hidden = $$("#results .group").length > 0;
}

// --- history (localStorage) ---------------------------------------------------------------------------------

function loadHistory() {
  try {
    const items = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(items) ? items : [];
  } catch (e) {
    return [];
  }
}

function saveHistory(entry) {
  // the sampled ids are in the MIDI already: keep the history small
  const slim = { ...entry, samples: entry.samples.map(({ tokens, ...rest }) => rest) };
  let items = [slim, ...loadHistory().filter((e) => e.id !== entry.id)].slice(0, HISTORY_MAX);
  // the browser's quota is a few MB: drop the oldest entries until it fits
  while (items.length) {
    try {
      localStorage.setItem(HISTORY_KEY, JSON.stringify(items));
      break;
    } catch (e) {
      items = items.slice(0, -1);
    }
  }
  renderHistory();
}

function renderHistory() {
  const items = loadHistory();
  const list = $("#history");
  list.innerHTML = "";
  for (const entry of items) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.id = entry.id;
    const p = document.createElement("span");
    p.className = "h-prompt";
    p.textContent = entry.prompt;
    const m = document.createElement("span");
    m.className = "h-meta";
    const n = entry.samples.length;
    m.textContent = `${new Date(entry.created).toLocaleString([], { dateStyle: "short", timeStyle: "short" })} · ${n} take${n > 1 ? "s" : ""}`;
    b.append(p, m);
    b.addEventListener("click", () => {
      showEntry(entry, false);
      if (entry.request) applyRequest(entry.request);
    });
    const del = document.createElement("button");
    del.type = "button";
    del.className = "h-delete";
    del.textContent = "×";
    del.title = "Remove from history";
    del.setAttribute("aria-label", `Remove “${entry.prompt}” from history`);
    del.addEventListener("click", () => {
      localStorage.setItem(HISTORY_KEY, JSON.stringify(loadHistory().filter((e) => e.id !== entry.id)));
      renderHistory();
    });
    li.append(b, del);
    list.appendChild(li);
  }
  $("#history-empty").hidden = items.length > 0;
  markHistory(state.currentHistory);
}

function markHistory(id) {
  state.currentHistory = id;
  for (const b of $$("#history button[data-id]")) b.classList.toggle("current", b.dataset.id === id);
}

function applyRequest(req) {
  $("#prompt").value = req.prompt || "";
  if (req.temperature) setRange("temperature", req.temperature);
  if (req.seconds) setRange("seconds", req.seconds);
  if (req.max_tokens) setRange("max-tokens", req.max_tokens);
  $("#bpm-auto").checked = !req.bpm;
  if (req.bpm) setRange("bpm", req.bpm);
  $("#bpm").disabled = !req.bpm;
  $("#seed").value = req.seed ?? "";
  $("#steer").checked = req.steer !== false;
  setRange("cfg", req.cfg || 1);
  state.selected = new Set(req.instruments || []);
  renderInstruments();
  setSamples(req.n || 1);
  updateOutputs();
}

// --- controls ----------------------------------------------------------------------------------------------

function setRange(id, value) {
  $(`#${id}`).value = String(value);
}

function updateOutputs() {
  $("#bpm-out").textContent = $("#bpm-auto").checked ? "auto" : `${$("#bpm").value} bpm`;
  $("#seconds-out").textContent = `${$("#seconds").value} s`;
  $("#temperature-out").textContent = Number($("#temperature").value).toFixed(2);
  const cfg = Number($("#cfg").value);
  $("#cfg-out").textContent = cfg === 1 ? "guidance off" : `guidance ${cfg.toFixed(2)}`;
  $("#max-tokens-out").textContent = `≤ ${Math.floor(Number($("#max-tokens").value) / 3)} notes`;
  $("#inst-hint").textContent = state.selected.size ? `${state.selected.size} chosen` : "from the prompt";
}

function renderInstruments() {
  const box = $("#instruments");
  box.innerHTML = "";
  for (const word of state.instruments) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = word;
    b.setAttribute("aria-pressed", String(state.selected.has(word)));
    b.addEventListener("click", () => {
      if (state.selected.has(word)) state.selected.delete(word); else state.selected.add(word);
      b.setAttribute("aria-pressed", String(state.selected.has(word)));
      updateOutputs();
    });
    box.appendChild(b);
  }
}

function setSamples(n) {
  state.n = n;
  for (const b of $$("#samples button")) b.setAttribute("aria-checked", String(Number(b.dataset.n) === n));
}

function selectTab(name) {
  for (const tab of ["compose", "analyze"]) {
    $(`#tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`#panel-${tab}`).hidden = tab !== name;
  }
  for (const t of $$(`#panel-${name} .take`)) if (t._redraw) t._redraw();
}

// --- analyze -----------------------------------------------------------------------------------------------

const FACTS = [
  ["Key", (a) => a.key ? `${a.key}${a.key_confidence ? ` (${Math.round(a.key_confidence * 100)}%)` : ""}` : "—"],
  ["Tempo", (a) => `${Math.round(a.bpm)} bpm · ${a.tempo_word}`],
  ["Meter", (a) => a.time_signature],
  ["Length", (a) => `${fmtTime(a.duration)} · ${a.duration_word}`],
  ["Instruments", (a) => (a.instrument_words || []).join(", ")],
  ["Texture", (a) => `${a.texture}, ${a.n_notes} notes`],
  ["Dynamics", (a) => `${a.dynamics} · ${a.articulation}`],
  ["Register", (a) => `${a.register} (${a.pitch_low}–${a.pitch_high})`],
  ["Chords", (a) => (a.chord_pattern && a.chord_pattern.length ? a.chord_pattern : (a.chords || []).slice(0, 8).map((c) => c.label)).join(" → ") || "—"],
];

async function analyzeFile(file) {
  const limit = state.limits ? state.limits.max_upload_bytes : 2 * 1024 * 1024;
  if (file.size > limit) { toast(`${file.name} is over the ${Math.round(limit / 1024)} KiB upload limit.`, "error"); return; }
  state.analysisFile = file;
  state.chat = [];
  $("#chat-log").innerHTML = "";
  const zone = $("#dropzone");
  zone.classList.add("busy");
  $("#caption").textContent = "Listening…";
  $("#caption").classList.remove("ready");
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const res = await api("/v1/analyze", { method: "POST", body: form });
    const data = await res.json();
    showAnalysis(file, data);
    describe(file);
  } catch (e) {
    toast(`${file.name}: ${e.message}`, "error");
  } finally {
    zone.classList.remove("busy");
  }
}

function showAnalysis(file, data) {
  $("#analysis").hidden = false;
  const a = data.analysis;
  const sample = { midi_base64: null, notes: data.notes, duration: data.duration, settings: { bpm: a.bpm, time_signature: a.time_signature } };
  const holder = $("#analysis-take");
  const take = $("#take-template").content.firstElementChild.cloneNode(true);
  take.id = "analysis-take";
  take.classList.add("card");
  $(".take-title", take).textContent = file.name;
  $(".take-meta", take).textContent = `${data.notes.length} notes${data.truncated ? " (first ones shown)" : ""} · ${(data.instruments || []).join(", ")}`;
  for (const sel of [".act-regenerate", ".act-continue", ".act-analyze"]) $(sel, take).remove();
  take._midi = file;
  take._duration = data.duration;
  const link = $(".act-download", take);
  link.href = URL.createObjectURL(file);
  link.download = file.name;
  holder.replaceWith(take);
  const canvas = $(".pianoroll", take);
  take._redraw = () => drawRoll(canvas, sample.notes, sample.duration, a.bpm, parseInt(a.time_signature, 10));
  requestAnimationFrame(take._redraw);
  legend($(".legend", take), data.notes);
  $(".time", take).textContent = `0:00 / ${fmtTime(data.duration)}`;
  $(".play", take).addEventListener("click", () => togglePlay(take));
  const facts = $("#facts");
  facts.innerHTML = "";
  for (const [name, fn] of FACTS) {
    let value;
    try { value = fn(a); } catch (e) { value = "—"; }
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    facts.append(dt, dd);
  }
}

// "" asks the server's understanding model, "analysis" answers from the analysis of the notes
function understandingForm(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const source = $("#caption-source").value;
  if (source) form.append("model", source);
  return form;
}

async function describe(file) {
  const cap = $("#caption");
  cap.textContent = "Writing a caption…";
  cap.classList.remove("ready");
  try {
    const form = understandingForm(file);
    const res = await api("/v1/describe", { method: "POST", body: form });
    const data = await res.json();
    if (state.analysisFile !== file) return;
    cap.textContent = data.caption.trim() || "The model wrote no caption for this piece.";
    cap.classList.toggle("ready", Boolean(data.caption.trim()));
  } catch (e) {
    if (state.analysisFile !== file) return;
    cap.textContent = e.status === 503
      ? "Captions need the understanding model, which this server has not loaded."
      : `No caption: ${e.message}`;
  }
}

async function ask(question) {
  const file = state.analysisFile;
  if (!file) { toast("Drop a MIDI file first.", "error"); return; }
  const log = $("#chat-log");
  const q = document.createElement("div");
  q.className = "bubble q";
  q.textContent = question;
  const a = document.createElement("div");
  a.className = "bubble a pending";
  a.textContent = "thinking…";
  log.append(q, a);
  log.scrollTop = log.scrollHeight;
  const button = $("#ask");
  setBusy(button, true);
  try {
    const form = understandingForm(file);
    form.append("question", question);
    form.append("history", JSON.stringify(state.chat.slice(-(state.limits ? state.limits.max_history_turns : 20))));
    const res = await api("/v1/ask", { method: "POST", body: form });
    const data = await res.json();
    a.textContent = data.answer.trim() || "(no answer)";
    a.classList.remove("pending");
    state.chat.push({ question, answer: data.answer });
  } catch (e) {
    a.remove();
    q.remove();
    toast(e.status === 503 ? "Questions need the understanding model, which this server has not loaded." : e.message, "error");
  } finally {
    setBusy(button, false);
    log.scrollTop = log.scrollHeight;
  }
}

// --- start -------------------------------------------------------------------------------------------------

async function loadServerInfo() {
  const chip = $("#model-status");
  try {
    const [models, inst] = await Promise.all([(await api("/v1/models")).json(), (await api("/v1/instruments")).json()]);
    state.limits = models.limits;
    state.instruments = inst.instruments;
    state.programNames = inst.program_names;
    renderInstruments();
    const t2m = models.models.find((m) => m.task === "text-to-midi");
    const und = models.models.find((m) => m.task === "understanding");
    chip.textContent = t2m && t2m.available ? `${t2m.id}${und && und.available ? " · understanding" : ""}` : "no model loaded";
    chip.className = `chip ${t2m && t2m.available ? "ok" : "bad"}`;
    chip.title = und && !und.available ? `Understanding model: ${und.reason}` : "Ready";
    if (!(und && und.available)) {  // captions and answers still come from the analysis
      $("#caption-source").value = "analysis";
      $("#caption-source option[value='']").disabled = true;
    }
    const maxTok = Math.min(models.limits.max_tokens, 4095);
    $("#max-tokens").max = String(maxTok - (maxTok % 3));
    if (Number($("#max-tokens").value) > maxTok) setRange("max-tokens", maxTok - (maxTok % 3));
    $("#max-tokens").min = String(Math.min(30, maxTok));
    $("#seconds").max = String(Math.min(95, models.limits.max_seconds));
    const n = models.limits.max_samples;
    for (const b of $$("#samples button")) b.hidden = Number(b.dataset.n) > n;
    $("#upload-limit").textContent = `${Math.round(models.limits.max_upload_bytes / 1024)} KiB`;
    updateOutputs();
  } catch (e) {
    chip.textContent = "server unreachable";
    chip.className = "chip bad";
    toast(e.message, "error");
  }
}

function wire() {
  for (const text of EXAMPLES) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text.length > 38 ? `${text.slice(0, 36)}…` : text;
    b.title = text;
    b.addEventListener("click", () => { $("#prompt").value = text; $("#prompt").focus(); });
    $("#examples").appendChild(b);
  }
  $("#composer").addEventListener("submit", (ev) => { ev.preventDefault(); generate(readRequest()); });
  $("#prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); generate(readRequest()); }
  });
  for (const id of ["bpm", "seconds", "temperature", "max-tokens", "cfg"]) $(`#${id}`).addEventListener("input", updateOutputs);
  $("#bpm-auto").addEventListener("change", () => { $("#bpm").disabled = $("#bpm-auto").checked; updateOutputs(); });
  $("#seed-dice").addEventListener("click", () => { $("#seed").value = String(Math.floor(Math.random() * 2 ** 31)); });
  for (const b of $$("#samples button")) b.addEventListener("click", () => setSamples(Number(b.dataset.n)));
  $("#samples").addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
    const visible = $$("#samples button").filter((b) => !b.hidden).length;
    setSamples(Math.min(visible, Math.max(1, state.n + (ev.key === "ArrowRight" ? 1 : -1))));
    $(`#samples button[data-n="${state.n}"]`).focus();
  });
  $("#history-clear").addEventListener("click", () => {
    localStorage.removeItem(HISTORY_KEY);
    renderHistory();
    toast("History cleared.");
  });
  $("#tab-compose").addEventListener("click", () => selectTab("compose"));
  $("#tab-analyze").addEventListener("click", () => selectTab("analyze"));
  $(".tabs").addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
    const next = $("#tab-compose").getAttribute("aria-selected") === "true" ? "analyze" : "compose";
    selectTab(next);
    $(`#tab-${next}`).focus();
  });
  const zone = $("#dropzone");
  $("#file").addEventListener("change", (ev) => { if (ev.target.files[0]) analyzeFile(ev.target.files[0]); ev.target.value = ""; });
  zone.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("#file").click(); } });
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    const file = ev.dataTransfer.files[0];
    if (file) analyzeFile(file);
  });
  // a file dropped anywhere on the page goes to the analyzer
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => {
    if (zone.contains(ev.target)) return;
    ev.preventDefault();
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (file) { selectTab("analyze"); analyzeFile(file); }
  });
  $("#caption-source").addEventListener("change", () => {
    if (state.analysisFile) describe(state.analysisFile);
  });
  $("#chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("#question").value.trim();
    if (!q) return;
    $("#question").value = "";
    ask(q);
  });
  document.addEventListener("keydown", (ev) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (ev.key === " " && !typing && !(document.activeElement.tagName === "BUTTON")) {
      const take = (state.player && state.player.take) || $("#results .take") || null;
      if (take && $(".play", take)) { ev.preventDefault(); togglePlay(take); }
    }
    if (ev.key === "Escape") stopPlayer();
  });
  let resize = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(() => { for (const t of $$(".take")) if (t._redraw) t._redraw(); }, 150);
  });
}

wire();
updateOutputs();
renderHistory();
loadServerInfo();
