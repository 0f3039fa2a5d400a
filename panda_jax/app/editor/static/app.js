// The PandA editor page: state here, computation on the server (JSON endpoints, see server.py).
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  info: null,
  sample: { seed: 0 },
  refine: false,
  edits: [],          // {part | mask, appearance, alpha, label}
  sel: 0,             // selected edit
  labels: null,       // Uint8Array [mh * mw]: the strongest part per pixel
  maps: null,         // Uint8Array [R_S * mh * mw]
  showParts: true,
  brushDirty: false,
  galleryPage: 0,
  compareAlphas: {},
};

// ---- requests ------------------------------------------------------------------------------
function showError(msg) {
  $("error-text").textContent = msg;
  $("error").hidden = false;
  clearTimeout(showError.t);
  showError.t = setTimeout(() => { $("error").hidden = true; }, 12000);
}
$("error-close").onclick = () => { $("error").hidden = true; };

async function post(path, body, raw = false) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": raw ? "application/octet-stream" : "application/json" },
    body: raw ? body : JSON.stringify(body),
  });
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}

async function postJSON(path, body) { return (await post(path, body)).json(); }

function stateBody(extra = {}) {
  const edits = S.edits.map((e) => {
    const o = { appearance: e.appearance, alpha: e.alpha };
    if (e.mask) o.mask = e.mask; else o.part = e.part;
    return o;
  });
  return Object.assign({ sample: S.sample, refine: S.refine, edits }, extra);
}

// One request of a kind in flight; a newer one waits and only the latest runs (slider moves).
function latest(fn) {
  let running = false, again = false;
  const run = async () => {
    if (running) { again = true; return; }
    running = true;
    try { await fn(); } catch (e) { showError(e.message); }
    running = false;
    if (again) { again = false; run(); }
  };
  return run;
}

function decodeB64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function setImage(img, src) {
  return new Promise((resolve) => {
    img.onload = () => resolve();
    img.onerror = () => resolve();
    img.src = src;
  });
}

// ---- info, sample, parts -------------------------------------------------------------------
async function loadInfo() {
  const res = await fetch("/api/info");
  S.info = await res.json();
  const I = S.info;
  $("model-info").textContent =
    `${I.family} · layer ${I.layer} (${I.features.join("×")}) · ${I.ranks[1]} parts, ${I.ranks[0]} appearances`;
  const [lo, hi] = I.alpha_range;
  const a = $("alpha");
  a.min = lo; a.max = hi; a.step = (hi - lo) / 400;
  $("alpha-min").textContent = lo.toFixed(1);
  $("alpha-max").textContent = "+" + hi.toFixed(1);
  $("seed").value = I.seed;
  S.sample = { seed: I.seed };
  if (!I.uploads) $("upload-label").hidden = true;
  const sel = $("sal-app");
  for (let j = 0; j < I.ranks[0]; j++) {
    const o = document.createElement("option");
    o.value = j; o.textContent = j + (j === I.background_appearance ? " (background)" : "");
    sel.appendChild(o);
  }
  const stage = $("stage");
  for (const c of [$("overlay"), $("brush")]) { c.width = I.map_size[1]; c.height = I.map_size[0]; }
  stage.style.aspectRatio = `${I.image[1]} / ${I.image[0]}`;
  S.edits = [{ part: 0, appearance: 0, alpha: 0 }];
  S.sel = 0;
}

async function loadSample() {
  const t0 = performance.now();
  const r = await postJSON("/api/sample", { sample: S.sample, refine: S.refine });
  S.labels = decodeB64(r.labels);
  S.maps = decodeB64(r.maps);
  await setImage($("original"), r.image);
  $("sample-desc").textContent = S.sample.latent !== undefined ? `uploaded latent ${S.sample.latent}`
    : `seed ${S.sample.seed}`;
  document.body.dataset.sample = S.sample.latent !== undefined ? S.sample.latent : String(S.sample.seed);
  drawOverlay();
  renderParts();
  status(`sample in ${Math.round(performance.now() - t0)} ms`);
}

function status(text) { $("status").textContent = text; }

function renderParts() {
  const ul = $("part-list");
  ul.textContent = "";
  const e = S.edits[S.sel];
  for (let k = 0; k < S.info.ranks[1]; k++) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.dataset.part = k;
    b.textContent = `part ${k}`;
    const c = S.info.palette[k];
    b.style.setProperty("--swatch", `rgb(${c[0]},${c[1]},${c[2]})`);
    if (e && !e.mask && e.part === k) b.classList.add("selected");
    b.onclick = () => selectPart(k);
    li.appendChild(b);
    ul.appendChild(li);
  }
}

function drawOverlay() {
  const cv = $("overlay");
  const ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  if (!S.showParts || !S.labels) return;
  const [mh, mw] = S.info.map_size;
  const n = mh * mw;
  const img = ctx.createImageData(mw, mh);
  const e = S.edits[S.sel];
  const selPart = e && !e.mask ? e.part : -1;
  for (let p = 0; p < n; p++) {
    const k = S.labels[p];
    const v = S.maps[k * n + p] / 255;
    const c = S.info.palette[k];
    const strong = selPart < 0 || k === selPart;
    img.data[4 * p] = c[0]; img.data[4 * p + 1] = c[1]; img.data[4 * p + 2] = c[2];
    img.data[4 * p + 3] = Math.round(255 * v * (strong ? 0.42 : 0.14));
  }
  if (e && e.mask) {  // a brushed region: its grid, upsampled by the canvas
    const [h, w] = S.info.features;
    for (let p = 0; p < n; p++) {
      const y = Math.min(h - 1, Math.floor((Math.floor(p / mw) + 0.5) * h / mh));
      const x = Math.min(w - 1, Math.floor(((p % mw) + 0.5) * w / mw));
      const v = e.mask[y][x];
      img.data[4 * p] = 255; img.data[4 * p + 1] = 255; img.data[4 * p + 2] = 255;
      img.data[4 * p + 3] = Math.max(img.data[4 * p + 3] * 0.3, Math.round(170 * v));
    }
  }
  ctx.putImageData(img, 0, 0);
}

// ---- edits ---------------------------------------------------------------------------------
function regionLabel(e) { return e.mask ? "brushed region" : `part ${e.part}`; }

function renderStack() {
  const ol = $("stack");
  ol.textContent = "";
  S.edits.forEach((e, i) => {
    const li = document.createElement("li");
    li.dataset.index = i;
    if (e.mask) li.dataset.mask = "1"; else li.dataset.part = e.part;
    li.dataset.appearance = e.appearance;
    li.dataset.alpha = e.alpha;
    if (i === S.sel) li.classList.add("selected");
    const sw = document.createElement("span");
    sw.className = "swatch";
    const c = e.mask ? [255, 255, 255] : S.info.palette[e.part];
    sw.style.background = `rgb(${c[0]},${c[1]},${c[2]})`;
    const text = document.createElement("span");
    text.className = "grow";
    text.textContent = `${regionLabel(e)} · appearance ${e.appearance} · α ${e.alpha >= 0 ? "+" : ""}${e.alpha.toFixed(2)}`;
    li.append(sw, text);
    const mk = (label, title, fn, disabled) => {
      const b = document.createElement("button");
      b.textContent = label; b.title = title; b.className = "icon"; b.disabled = disabled;
      b.onclick = (ev) => { ev.stopPropagation(); fn(); };
      li.appendChild(b);
    };
    mk("↑", "move up", () => moveEdit(i, -1), i === 0);
    mk("↓", "move down", () => moveEdit(i, 1), i === S.edits.length - 1);
    mk("✕", "remove", () => removeEdit(i), false);
    li.onclick = () => selectEdit(i);
    ol.appendChild(li);
  });
  $("add-edit").disabled = S.edits.length >= S.info.max_edits;
  const e = S.edits[S.sel];
  $("alpha").disabled = !e;
  if (e) {
    $("alpha").value = e.alpha;
    $("alpha-value").textContent = (e.alpha >= 0 ? "+" : "") + e.alpha.toFixed(2);
    $("sal-app").value = e.appearance;
  }
  document.body.dataset.selectedEdit = S.sel;
}

function selectEdit(i) {
  S.sel = i;
  renderStack(); renderParts(); drawOverlay();
  S.galleryPage = Math.floor((S.edits[i] ? S.edits[i].appearance : 0) / S.info.gallery);
  requestGallery();
}

function ensureEdit() {
  if (!S.edits.length) { S.edits.push({ part: 0, appearance: 0, alpha: 0 }); S.sel = 0; }
  return S.edits[S.sel];
}

function selectPart(k) {
  const e = ensureEdit();
  delete e.mask;
  e.part = k;
  renderStack(); renderParts(); drawOverlay();
  requestEdit(); requestGallery();
}

function setAppearance(j) {
  const e = ensureEdit();
  e.appearance = j;
  if (e.alpha === 0) e.alpha = S.info.alpha;
  renderStack(); markGallery();
  requestEdit();
}

function moveEdit(i, d) {
  const j = i + d;
  [S.edits[i], S.edits[j]] = [S.edits[j], S.edits[i]];
  if (S.sel === i) S.sel = j; else if (S.sel === j) S.sel = i;
  renderStack(); requestEdit();
}

function removeEdit(i) {
  S.edits.splice(i, 1);
  S.sel = Math.max(0, Math.min(S.sel, S.edits.length - 1));
  renderStack(); renderParts(); drawOverlay(); requestEdit(); requestGallery();
}

$("add-edit").onclick = () => {
  const cur = S.edits[S.sel];
  const e = { part: cur && !cur.mask ? cur.part : 0, appearance: 0, alpha: 0 };
  S.edits.push(e);
  S.sel = S.edits.length - 1;
  renderStack(); renderParts(); drawOverlay(); requestGallery();
};

const requestEdit = latest(async () => {
  const t0 = performance.now();
  const r = await postJSON("/api/edit", stateBody());
  await setImage($("edited"), r.image);
  const ms = performance.now() - t0;
  $("latency").textContent = `${Math.round(ms)} ms (server ${Math.round(r.ms)} ms)`;
  const roir = r.roir[S.sel];
  $("roir").textContent = roir === null || roir === undefined ? "" :
    `ROIR of this edit: ${roir.toFixed(3)} (change outside the region / inside; lower is more local)`;
  document.body.dataset.edits = String(++requestEdit.count);
});
requestEdit.count = 0;

// ---- gallery -------------------------------------------------------------------------------
const requestGallery = latest(async () => {
  const box = $("gallery");
  if (!S.edits.length) { box.textContent = ""; return; }
  box.classList.add("loading");
  let r;
  try { r = await postJSON("/api/gallery", stateBody({ target: S.sel, page: S.galleryPage })); }
  finally { box.classList.remove("loading"); }
  box.textContent = "";
  r.appearances.forEach((j, i) => {
    const b = document.createElement("button");
    b.className = "thumb";
    b.dataset.appearance = j;
    b.title = `appearance ${j}`;
    const img = document.createElement("img");
    img.src = r.images[i]; img.alt = `appearance ${j}`;
    const cap = document.createElement("span");
    cap.textContent = j;
    b.append(img, cap);
    b.onclick = () => setAppearance(j);
    box.appendChild(b);
  });
  $("gallery-note").textContent = `at α ${r.alpha >= 0 ? "+" : ""}${r.alpha.toFixed(1)} on ${regionLabel(S.edits[S.sel])}`;
  const pages = $("gallery-pages");
  pages.textContent = "";
  if (r.pages > 1) {
    for (let p = 0; p < r.pages; p++) {
      const b = document.createElement("button");
      b.textContent = `${p * S.info.gallery}–${Math.min(S.info.ranks[0], (p + 1) * S.info.gallery) - 1}`;
      if (p === r.page) b.classList.add("selected");
      b.onclick = () => { S.galleryPage = p; requestGallery(); };
      pages.appendChild(b);
    }
  }
  markGallery();
  document.body.dataset.gallery = String(++requestGallery.count);
});
requestGallery.count = 0;

function markGallery() {
  const e = S.edits[S.sel];
  for (const b of $("gallery").children) {
    b.classList.toggle("selected", !!e && Number(b.dataset.appearance) === e.appearance);
  }
}

// ---- image clicks and brush ----------------------------------------------------------------
function gridPoint(ev) {
  const cv = $("brush");
  const r = cv.getBoundingClientRect();
  const [mh, mw] = S.info.map_size;
  const x = Math.min(mw - 1, Math.max(0, Math.floor((ev.clientX - r.left) / r.width * mw)));
  const y = Math.min(mh - 1, Math.max(0, Math.floor((ev.clientY - r.top) / r.height * mh)));
  return { x, y, fx: (ev.clientX - r.left) / r.width * mw, fy: (ev.clientY - r.top) / r.height * mh };
}

let painting = false;
function paint(ev) {
  const p = gridPoint(ev);
  const cv = $("brush");
  const ctx = cv.getContext("2d");
  const rad = Number($("brush-size").value) * S.info.map_size[1] / 64;
  ctx.fillStyle = "rgba(255,255,255,1)";
  ctx.beginPath();
  ctx.arc(p.fx, p.fy, rad, 0, 2 * Math.PI);
  ctx.fill();
  S.brushDirty = true;
  $("brush-apply").disabled = false;
}

const brushCanvas = $("brush");
brushCanvas.addEventListener("pointerdown", (ev) => {
  if ($("brush-mode").checked) {
    painting = true; brushCanvas.setPointerCapture(ev.pointerId); paint(ev);
  } else {
    const p = gridPoint(ev);
    selectPart(S.labels[p.y * S.info.map_size[1] + p.x]);
  }
});
brushCanvas.addEventListener("pointermove", (ev) => {
  if (painting) { paint(ev); return; }
  if (!S.labels || $("brush-mode").checked) return;
  const p = gridPoint(ev);
  $("hover").textContent = `click: part ${S.labels[p.y * S.info.map_size[1] + p.x]}`;
});
brushCanvas.addEventListener("pointerleave", () => { $("hover").textContent = ""; });
brushCanvas.addEventListener("pointerup", () => { painting = false; });
$("brush-mode").onchange = () => {
  document.body.classList.toggle("brushing", $("brush-mode").checked);
};
$("brush-clear").onclick = () => {
  const cv = $("brush");
  cv.getContext("2d").clearRect(0, 0, cv.width, cv.height);
  S.brushDirty = false;
  $("brush-apply").disabled = true;
};
$("brush-apply").onclick = async () => {
  const cv = $("brush");
  const d = cv.getContext("2d").getImageData(0, 0, cv.width, cv.height).data;
  const bytes = new Uint8Array(cv.width * cv.height);
  for (let i = 0; i < bytes.length; i++) bytes[i] = d[4 * i + 3];
  let bin = "";
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  try {
    const r = await postJSON("/api/mask", { width: cv.width, height: cv.height, data: btoa(bin) });
    const e = ensureEdit();
    e.mask = r.mask;
    delete e.part;
    if (e.alpha === 0) e.alpha = S.info.alpha;
    $("brush-clear").onclick();
    $("brush-mode").checked = false; $("brush-mode").onchange();
    renderStack(); renderParts(); drawOverlay(); requestEdit(); requestGallery();
  } catch (err) { showError(err.message); }
};

// ---- controls ------------------------------------------------------------------------------
$("alpha").addEventListener("input", () => {
  const e = ensureEdit();
  e.alpha = Number($("alpha").value);
  $("alpha-value").textContent = (e.alpha >= 0 ? "+" : "") + e.alpha.toFixed(2);
  const li = $("stack").children[S.sel];
  if (li) { li.dataset.alpha = e.alpha; li.querySelector(".grow").textContent =
    `${regionLabel(e)} · appearance ${e.appearance} · α ${e.alpha >= 0 ? "+" : ""}${e.alpha.toFixed(2)}`; }
  requestEdit();
});
$("alpha").addEventListener("change", () => requestGallery());
$("alpha-zero").onclick = () => { $("alpha").value = 0; $("alpha").dispatchEvent(new Event("input")); };

async function changeSample(sample) {
  S.sample = sample;
  try { await loadSample(); } catch (e) { showError(e.message); return; }
  requestEdit(); requestGallery();
}

function seedValue() {
  const v = Math.trunc(Number($("seed").value));
  return Number.isFinite(v) ? v : 0;
}
$("seed").onchange = () => changeSample({ seed: seedValue() });
$("prev").onclick = () => { $("seed").value = seedValue() - 1; $("seed").onchange(); };
$("next").onclick = () => { $("seed").value = seedValue() + 1; $("seed").onchange(); };
$("random").onclick = () => { $("seed").value = Math.floor(Math.random() * 1e6); $("seed").onchange(); };
document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  if (ev.key === "ArrowLeft") $("prev").onclick();
  if (ev.key === "ArrowRight") $("next").onclick();
});
$("upload").onchange = async () => {
  const f = $("upload").files[0];
  $("upload").value = "";
  if (!f) return;
  try {
    const r = await (await post("/api/latent", await f.arrayBuffer(), true)).json();
    changeSample({ latent: r.latent });
  } catch (e) { showError(e.message); }
};
$("show-parts").onchange = () => { S.showParts = $("show-parts").checked; drawOverlay(); };
$("refine").onchange = async () => {
  S.refine = $("refine").checked;
  status(S.refine ? "refining parts…" : "");
  await changeSample(S.sample);
};

// ---- saliency, compare, export -------------------------------------------------------------
async function showSaliency() {
  try {
    const r = await postJSON("/api/saliency", stateBody({ appearance: Number($("sal-app").value) }));
    await Promise.all([setImage($("sal-heat"), r.heatmap), setImage($("sal-mask"), r.mask),
      setImage($("sal-bgmask"), r.background_mask), setImage($("sal-nobg"), r.background_removed)]);
    $("bg-caption").textContent = `background (appearance ${r.background_appearance})`;
  } catch (e) { showError(e.message); }
}
$("sal-refresh").onclick = showSaliency;
$("sal-app").onchange = showSaliency;

async function runCompare() {
  if (!S.edits.length) return;
  $("compare-note").textContent = "computing…";
  try {
    const r = await postJSON("/api/compare", stateBody({ target: S.sel, alphas: S.compareAlphas }));
    const box = $("compare");
    box.textContent = "";
    for (const m of r.methods) {
      const fig = document.createElement("figure");
      fig.dataset.method = m.name;
      const img = document.createElement("img");
      img.src = m.image; img.alt = m.name;
      const cap = document.createElement("figcaption");
      cap.textContent = `${m.name}: ROIR ${m.roir === null ? "–" : m.roir.toFixed(2)}`;
      fig.append(img, cap);
      if (m.alpha_range) {
        const s = document.createElement("input");
        s.type = "range"; s.min = m.alpha_range[0]; s.max = m.alpha_range[1];
        s.step = (m.alpha_range[1] - m.alpha_range[0]) / 200; s.value = m.alpha;
        s.title = `${m.name} strength`;
        s.onchange = () => { S.compareAlphas[m.name] = Number(s.value); runCompare(); };
        fig.appendChild(s);
      }
      box.appendChild(fig);
    }
    $("compare-note").textContent = r.note || "";
  } catch (e) { $("compare-note").textContent = ""; showError(e.message); }
}
$("compare-run").onclick = runCompare;

async function download(path, body, name) {
  try {
    const res = await post(path, body);
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement("a");
    a.href = url; a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) { showError(e.message); }
}
$("export-png").onclick = () => download("/api/export/png", stateBody(), "panda-edit.png");
$("export-gif").onclick = () => download("/api/export/gif", stateBody({ target: S.sel }), "panda-sweep.gif");
$("export-recipe").onclick = () => download("/api/export/recipe", stateBody(), "panda-recipe.json");

// ---- start ---------------------------------------------------------------------------------
(async () => {
  try {
    await loadInfo();
    renderStack();
    await loadSample();
    await requestEdit();
    await requestGallery();
    document.body.dataset.ready = "1";
  } catch (e) { showError(e.message); }
})();
