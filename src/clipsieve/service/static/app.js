"use strict";
// clipsieve web page: no build step, no dependencies. Every string from the server or a file
// name is put in the page with textContent, never as HTML.

const $ = (sel) => document.querySelector(sel);
const state = { info: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") Object.assign(node.style, v);  // CSSOM: allowed by the page's CSP
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function headers() {
  const key = $("#api-key").value.trim();
  if (key) sessionStorage.setItem("clipsieve-key", key);
  return key ? { "Authorization": "Bearer " + key } : {};
}

async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const err = (data && data.error) || { code: "http_" + resp.status, message: resp.statusText };
    const e = new Error(err.message);
    e.code = err.code; e.status = resp.status;
    throw e;
  }
  return { status: resp.status, data };
}

async function loadInfo() {
  const status = $("#status");
  try {
    const { data } = await api("/v1/info");
    state.info = data;
    const select = $("#policy");
    select.replaceChildren();
    for (const p of data.policies) {
      const opt = el("option", { value: p.name }, `${p.name} (v${p.version})`);
      if (p.default) opt.selected = true;
      select.append(opt);
    }
    status.textContent = data.ready ? `ready · ${data.model} · ${data.device || ""}` : "model loading…";
    status.className = "status" + (data.ready ? " ready" : "");
    if (!data.ready) setTimeout(loadInfo, 2000);
  } catch (e) {
    if (e.status === 401) {
      $("#key-row").hidden = false;
      status.textContent = "this server needs an API key";
      status.className = "status error";
    } else {
      status.textContent = "cannot reach the server: " + e.message;
      status.className = "status error";
      setTimeout(loadInfo, 3000);
    }
  }
}

function fmt(x, digits = 2) {
  return typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "–";
}

function bar(name, value, thresholds, decision) {
  const track = el("div", { class: "track" });
  const fill = el("div", { class: "fill" + (decision && decision !== "allow" ? " " + decision : ""),
                           style: { width: `${Math.max(0, Math.min(1, value)) * 100}%` } });
  track.append(fill);
  if (thresholds) {
    for (const level of ["review", "block"]) {
      const t = thresholds[level];
      if (typeof t === "number") {
        track.append(el("div", { class: "mark " + level, title: `${level} at ${fmt(t)}`,
                                 style: { left: `calc(${t * 100}% - 1px)` } }));
      }
    }
  }
  return el("div", { class: "bar", "data-name": name }, el("span", {}, name), track,
            el("span", { class: "val" }, fmt(value)));
}

function thumb(url, flagged, isVideo) {
  const box = el("div", { class: "thumb" + (flagged ? " blurred" : "") });
  const media = isVideo ? el("video", { src: url, muted: "", preload: "metadata" })
                        : el("img", { src: url, alt: "" });
  box.append(media);
  if (flagged) {
    const veil = el("div", { class: "veil" }, "flagged: click to show");
    box.append(veil);
    box.addEventListener("click", () => { box.classList.remove("blurred"); veil.remove(); }, { once: true });
  }
  return box;
}

function renderImage(card, file, url, r) {
  card.replaceChildren();
  if (r.status !== "ok") {
    card.append(thumb(url, false, false), el("div", { class: "body" },
      el("div", { class: "name" }, file.name), el("span", { class: "verdict error" }, "error"),
      el("div", { class: "error-msg" }, `${r.error.code}: ${r.error.message}`)));
    return;
  }
  const mod = r.moderation || null;
  const decision = mod ? mod.decision : "allow";
  const flagged = decision === "review" || decision === "block";
  card.dataset.decision = decision;
  const body = el("div", { class: "body" });
  body.append(el("div", { class: "name" }, file.name),
              el("div", {}, el("span", { class: "verdict " + decision }, decision)));
  if (mod && mod.reasons && mod.reasons.length) {
    body.append(el("ul", { class: "reasons" }, ...mod.reasons.slice(0, 3).map((t) => el("li", {}, t))));
  }
  const q = r.quality;
  if (q) {
    const comps = el("div", { class: "components" });
    for (const [k, v] of Object.entries(q.components || {})) {
      comps.append(el("span", {}, k), el("span", { class: "val" }, fmt(v, 1)));
    }
    body.append(el("h3", {}, "quality (0–10)"),
      el("div", { class: "score" }, el("span", { class: "big", "data-testid": "quality-score" }, fmt(q.score, 1)),
        el("span", { class: "parts" }, `technical ${fmt(q.technical, 1)} · aesthetic ${fmt(q.aesthetic, 1)}`)),
      el("details", {}, el("summary", {}, "all parts"), comps));
  }
  if (mod) {
    const cats = el("div", { class: "categories" });
    for (const [name, p] of Object.entries(mod.categories)) {
      cats.append(bar(name, p, (mod.thresholds || {})[name], (mod.category_decisions || {})[name]));
    }
    body.append(el("h3", {}, `moderation · ${mod.policy.name} v${mod.policy.version}`), cats,
      el("div", { class: "legend" }, "thresholds:", el("i", { class: "review" }),
         "review", el("i", { class: "block" }), "block"));
  }
  if (r.labels) {
    const labels = el("div", { class: "labels" });
    const sorted = Object.entries(r.labels).sort((a, b) => b[1] - a[1]);
    for (const [name, p] of sorted) labels.append(bar(name, p, null, null));
    body.append(el("h3", {}, "labels"), labels);
  }
  card.append(thumb(url, flagged, false), body);
}

async function analyseImage(file) {
  const url = URL.createObjectURL(file);
  const card = el("article", { class: "card" }, el("div", { class: "body" },
    el("div", { class: "name" }, file.name), el("div", {}, "analysing…")));
  $("#results").prepend(card);
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("policy", $("#policy").value);
  const labels = $("#labels").value.trim();
  if (labels) form.append("labels", labels);
  const caption = $("#caption").value.trim();
  if (caption) form.append("caption", caption);
  try {
    const { data } = await api("/v1/images", { method: "POST", body: form });
    renderImage(card, file, url, data.results[0]);
  } catch (e) {
    renderImage(card, file, url, { status: "error", error: { code: e.code, message: e.message } });
  }
}

function renderJob(card, file, url, job) {
  const body = el("div", { class: "body" }, el("div", { class: "name" }, file.name));
  if (job.status === "queued" || job.status === "running") {
    const p = el("div", { class: "progress" }, el("div", { style: { width: `${(job.progress || 0) * 100}%` } }));
    body.append(el("div", {}, `${job.status} · ${Math.round((job.progress || 0) * 100)}%`), p);
    card.replaceChildren(thumb(url, false, true), body);
    return;
  }
  if (job.status !== "done") {
    body.append(el("span", { class: "verdict error" }, job.status),
                el("div", { class: "error-msg" }, job.error ? `${job.error.code}: ${job.error.message}` : ""));
    card.replaceChildren(thumb(url, false, true), body);
    return;
  }
  const r = job.result || {};
  const verdict = r.verdict || {};
  const decision = verdict.decision || (r.moderation && r.moderation.decision) || "allow";
  body.append(el("div", {}, el("span", { class: "verdict " + decision }, decision)));
  if (verdict.category) {
    body.append(el("div", { class: "reasons" },
      `${verdict.category} from ${fmt((verdict.start_ms || 0) / 1000, 1)} s to ${fmt((verdict.end_ms || 0) / 1000, 1)} s`));
  }
  const q = r.quality;
  if (q && typeof q === "object") {
    const score = q.mean !== undefined ? q.mean : q.score;
    body.append(el("h3", {}, "quality (0–10)"), el("div", { class: "score" },
      el("span", { class: "big", "data-testid": "quality-score" }, fmt(score, 1)),
      el("span", { class: "parts" }, `median ${fmt(q.median, 1)} · p10 ${fmt(q.p10, 1)}`)));
    if (q.checks && q.checks.length) {
      body.append(el("ul", { class: "segments checks" }, ...q.checks.slice(0, 10).map((c) =>
        el("li", {}, `${c.kind}: ${fmt(c.start_ms / 1000, 1)}–${fmt(c.end_ms / 1000, 1)} s`))));
    }
  }
  body.append(el("div", { class: "parts" }, `${(r.frames || []).length} frames · ${fmt((r.duration_ms || 0) / 1000, 1)} s`));
  const segs = r.segments || [];
  if (segs.length) {
    body.append(el("h3", {}, "segments"), el("ul", { class: "segments" }, ...segs.slice(0, 10).map((s) =>
      el("li", {}, `${s.category} ${s.decision}: ${fmt(s.start_ms / 1000, 1)}–${fmt(s.end_ms / 1000, 1)} s (max ${fmt(s.max_score)})`))));
  }
  card.replaceChildren(thumb(url, decision !== "allow", true), body);
}

async function analyseVideo(file) {
  const url = URL.createObjectURL(file);
  const card = el("article", { class: "card" }, el("div", { class: "body" },
    el("div", { class: "name" }, file.name), el("div", {}, "uploading…")));
  $("#results").prepend(card);
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("policy", $("#policy").value);
  const labels = $("#labels").value.trim();
  if (labels) form.append("labels", labels);
  try {
    let { data: job } = await api("/v1/videos", { method: "POST", body: form });
    renderJob(card, file, url, job);
    while (job.status === "queued" || job.status === "running") {
      await new Promise((ok) => setTimeout(ok, 1000));
      job = (await api(`/v1/jobs/${job.id}`)).data;
      renderJob(card, file, url, job);
    }
  } catch (e) {
    renderJob(card, file, url, { status: "failed", error: { code: e.code, message: e.message } });
  }
}

function handle(files) {
  for (const file of files) {
    if ((file.type || "").startsWith("video/") || /\.(mp4|mov|mkv|webm|avi)$/i.test(file.name)) {
      analyseVideo(file);
    } else {
      analyseImage(file);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const saved = sessionStorage.getItem("clipsieve-key");
  if (saved) $("#api-key").value = saved;
  $("#api-key").addEventListener("change", loadInfo);
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    handle(e.dataTransfer.files);
  });
  $("#files").addEventListener("change", (e) => { handle(e.target.files); e.target.value = ""; });
  loadInfo();
});
