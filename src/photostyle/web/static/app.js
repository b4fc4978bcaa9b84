// photostyle page: choose two photos, make it (progress, cancel), compare, adjust the look live, download.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  config: null,
  chosen: { content: null, style: null }, // {file, name} or {example, name}
  following: null, // id of the job whose progress is shown
  job: null, // the finished job shown in step 3
  look: { strength: 1, chroma: 1 },
  view: "compare",
  zoom: "fit",
  live: null, // {lab, image, ctx, w, h, W, H, full}
  groups: null, // pairings as edited: for each, the pairing it belongs to, or null when dropped
};

// ---------- small helpers ----------

function say(text) {
  $("#message").textContent = text || "";
  $("#message").hidden = !text;
}

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}` : `${m}:${String(r).padStart(2, "0")}`;
}

function megabytes(bytes) {
  return bytes >= 1e6 ? `${(bytes / 2 ** 20).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} kB`;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function percent(share) {
  return `${Math.round(share * 100)} %`;
}

function loadImage(src) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = src;
  });
}

async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error("The photostyle server does not answer. Is it still running?");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((body && body.error) || `The server answered ${response.status}.`);
  return body;
}

function setStep(n) {
  for (const i of [1, 2, 3]) {
    const li = $(`#step-${i}`);
    if (i === n) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
    li.classList.toggle("done", i < n);
  }
}

// ---------- step 1: two photos ----------

function warn(kind, text) {
  const box = $(`#${kind}-drop`);
  box.querySelector(".warn").textContent = text || "";
  box.querySelector(".warn").hidden = !text;
  box.classList.toggle("bad", Boolean(text));
}

function showChoice(kind, src, info) {
  const box = $(`#${kind}-drop`);
  const img = box.querySelector(".zone img");
  img.src = src;
  img.alt = kind === "content" ? "Your photo" : "The style photo";
  img.hidden = false;
  box.querySelector(".hint").hidden = true;
  box.querySelector(".info").textContent = info;
  box.classList.add("chosen");
}

function clearChoice(kind) {
  const box = $(`#${kind}-drop`);
  state.chosen[kind] = null;
  const img = box.querySelector(".zone img");
  img.hidden = true;
  img.removeAttribute("src");
  box.querySelector(".hint").hidden = false;
  box.querySelector(".info").textContent = "";
  box.classList.remove("chosen");
}

function ready() {
  const running = state.following !== null;
  const both = Boolean(state.chosen.content && state.chosen.style);
  $("#start").disabled = running || !both;
  if (!running && $("#result").hidden) setStep(both ? 2 : 1);
}

async function chooseFile(kind, file) {
  if (!file) return;
  const box = $(`#${kind}-drop`);
  const what = kind === "content" ? "Your photo" : "The style photo";
  const limits = state.config;
  clearChoice(kind);
  warn(kind, "");
  say("");
  box.querySelector(".example").value = "";
  if (limits && file.size > limits.max_upload_mb * 2 ** 20) {
    warn(kind, `${what} ${file.name} is ${megabytes(file.size)}, over the limit of ${limits.max_upload_mb} MB ` +
      "per photo. Downscale it or save it as a JPEG, then choose it again.");
    return ready();
  }
  box.querySelector(".checking").hidden = false;
  try {
    const url = URL.createObjectURL(file);
    const img = await loadImage(url);
    if (img) {
      const pixels = img.naturalWidth * img.naturalHeight;
      if (limits && pixels > limits.max_pixels) {
        warn(kind, `${what} ${file.name} has ${(pixels / 1e6).toFixed(1)} megapixels, over the limit of ` +
          `${Math.round(limits.max_pixels / 1e6)}. Downscale it, then choose it again.`);
        return;
      }
      showChoice(kind, url, `${file.name} · ${img.naturalWidth} × ${img.naturalHeight} px · ${megabytes(file.size)}`);
      state.chosen[kind] = { file, name: file.name };
      return;
    }
    // The browser cannot show it (TIFF, 16-bit, or broken): photostyle checks it and sends a preview.
    const form = new FormData();
    form.append("kind", kind);
    form.append("photo", file);
    let response;
    try {
      response = await fetch("/api/preview", { method: "POST", body: form });
    } catch (err) {
      warn(kind, "The photostyle server does not answer. Is it still running?");
      return;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      warn(kind, body.error || `${what} ${file.name} cannot be used.`);
      return;
    }
    const size = response.headers.get("x-photo-size") || "";
    showChoice(kind, URL.createObjectURL(await response.blob()),
      `${file.name} · ${size.replace("x", " × ")} px · ${megabytes(file.size)} · preview made by photostyle`);
    state.chosen[kind] = { file, name: file.name };
  } finally {
    box.querySelector(".checking").hidden = true;
    ready();
  }
}

async function chooseExample(kind, name) {
  clearChoice(kind);
  warn(kind, "");
  if (!name) return ready();
  const url = `/api/examples/${encodeURIComponent(name)}`;
  const img = await loadImage(url);
  showChoice(kind, url, img ? `${name} · ${img.naturalWidth} × ${img.naturalHeight} px · example` : name);
  state.chosen[kind] = { example: name, name };
  ready();
}

for (const box of document.querySelectorAll(".drop")) {
  const kind = box.dataset.kind;
  const zone = box.querySelector(".zone");
  const input = box.querySelector("input[type=file]");
  input.setAttribute("aria-label", `${kind === "content" ? "Your photo" : "Style photo"}: pick a file`);
  input.addEventListener("change", (e) => chooseFile(kind, e.target.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    chooseFile(kind, e.dataTransfer.files[0]);
  });
  box.querySelector(".example").addEventListener("change", (e) => chooseExample(kind, e.target.value));
  box.querySelector(".example").setAttribute("aria-label", `${kind === "content" ? "Your photo" : "Style photo"}: or an example`);
}

// ---------- step 2: make it ----------

const PRESET_WORDS = {
  fast: "Fast: a quick look, fine for most photos.",
  balanced: "Balanced: the look painted at two sizes, the finer one the photo's own, closer to the style; takes several times as long as fast.",
  best: "Best: more steps at the photo's own size; takes a third to a half longer than balanced.",
};

async function loadConfig() {
  const config = await api("/api/config");
  state.config = config;
  for (const [name, p] of Object.entries(config.presets)) {
    const label = name[0].toUpperCase() + name.slice(1);
    $("#preset").add(new Option(`${label} (${p.size} px, ${p.steps} steps)`, name));
  }
  $("#preset").value = "fast";
  showPresetHelp();
  for (const select of document.querySelectorAll(".example")) {
    for (const name of config.examples) select.add(new Option(name, name));
    select.closest(".example-label").hidden = config.examples.length === 0;
  }
  $("#limits").textContent = `JPEG, PNG, TIFF, WebP or BMP, up to ${config.max_upload_mb} MB and ` +
    `${Math.round(config.max_pixels / 1e6)} megapixels per photo.`;
  $("#mask-colours").textContent = config.mask_colours.map((c) => (c === "lightblue" ? "light blue" : c)).join(", ");
}

function showPresetHelp() {
  $("#preset-help").textContent = PRESET_WORDS[$("#preset").value] || "";
}

async function start() {
  const form = new FormData();
  for (const kind of ["content", "style"]) {
    const c = state.chosen[kind];
    if (c.file) form.append(kind, c.file);
    else form.append(`${kind}_example`, c.example);
  }
  form.append("preset", $("#preset").value);
  await submit("/api/jobs", form);
}

async function submit(url, form) {
  say("");
  $("#start").disabled = true;
  $("#result").hidden = true;
  setStep(2);
  showProgress({ state: "queued", phase: "queued", ahead: 0, elapsed: 0, step: 0, total: 0 });
  $("#progress").hidden = false;
  $("#make").scrollIntoView({ block: "start", behavior: "smooth" });
  try {
    const job = await api(url, { method: "POST", body: form });
    await follow(job);
  } catch (err) {
    $("#progress").hidden = true;
    say(err.message);
    setStep(state.job ? 3 : 2);
    if (state.job) $("#result").hidden = false;
  } finally {
    state.following = null;
    ready();
  }
}

async function follow(job) {
  state.following = job.id;
  $("#progress-before").src = job.before;
  $("#preview").hidden = true;
  $("#preview-wait").hidden = false;
  for (;;) {
    showProgress(job);
    if (job.state === "done") return showResult(job);
    if (job.state === "failed") throw new Error(job.error);
    if (job.state === "cancelled") {
      $("#progress").hidden = true;
      say(job.error && job.error.includes("page was closed") ? job.error : "Cancelled. Nothing was kept.");
      if (state.job) { $("#result").hidden = false; setStep(3); } else setStep(2);
      return;
    }
    await new Promise((r) => setTimeout(r, job.state === "queued" ? 1000 : 600));
    if (state.following !== job.id) return;
    job = await api(`/api/jobs/${job.id}`);
  }
}

function showProgress(job) {
  const bar = $("#bar");
  const total = job.total || 1;
  let status = "", times = "";
  const left = job.remaining != null ? `about ${clock(job.remaining)} left` : "working out how long it takes…";
  switch (job.phase) {
    case "queued":
      status = job.ahead ? `Waiting in line: ${plural(job.ahead, "photo", "photos")} ahead of yours` : "Starting…";
      times = `waiting ${clock(job.elapsed || 0)}` +
        (job.ahead ? (job.wait != null ? ` · starts in about ${clock(job.wait)}` : " · working out how long the line takes…") : "");
      break;
    case "preparing":
      status = "Preparing: reading both photos and matching their parts";
      times = `${clock(job.elapsed)} elapsed · ${left}`;
      break;
    case "optimising":
      status = `Making it: step ${job.step} of ${job.total}`;
      times = `${clock(job.elapsed)} elapsed · ${left}`;
      break;
    case "finishing":
      status = "Finishing: applying the look to your full-size photo";
      times = `${clock(job.elapsed)} elapsed · ${left}`;
      break;
    case "cancelling":
      status = "Cancelling…";
      break;
    case "done":
      status = `Done in ${clock(job.elapsed)}`;
      break;
    default:
      status = job.phase || "";
  }
  $("#status").textContent = status;
  $("#times").textContent = times;
  // Screen readers hear each phase once, not every step.
  const phase = job.phase === "optimising" ? "Making it" : status;
  if ($("#announce").dataset.phase !== job.phase) {
    $("#announce").dataset.phase = job.phase;
    $("#announce").textContent = phase;
  }
  if (job.phase === "optimising" || job.phase === "finishing" || job.phase === "done") {
    bar.max = total;
    bar.value = job.phase === "optimising" ? job.step : total;
  } else {
    bar.removeAttribute("value"); // indeterminate: nothing to count yet
  }
  $("#cancel").disabled = !(job.state === "queued" || job.state === "running") || job.phase === "cancelling";
  $("#cancel").hidden = job.state === "done";
  if (job.preview) {
    const preview = $("#preview");
    if (!preview.src.endsWith(job.preview)) preview.src = job.preview;
    preview.hidden = false;
    $("#preview-wait").hidden = true;
    const step = Number(new URL(job.preview, location.href).searchParams.get("step"));
    $("#preview-caption").textContent = `Preview after step ${step} of ${job.total}`;
  }
}

async function cancel() {
  const id = state.following;
  if (!id) return;
  $("#cancel").disabled = true;
  $("#status").textContent = "Cancelling…";
  try {
    const job = await api(`/api/jobs/${id}/cancel`, { method: "POST" });
    showProgress(job);
  } catch (err) {
    say(err.message);
  }
}

// Closing or leaving the page cancels the job it is following: nobody would see the result.
addEventListener("pagehide", () => {
  if (state.following) navigator.sendBeacon(`/api/jobs/${state.following}/cancel`);
});

// ---------- step 3: the result ----------

async function showResult(job) {
  state.following = null;
  state.job = job;
  state.look = { ...job.look };
  state.groups = job.segments.pairings.map((_, k) => k);
  $("#progress").hidden = true;
  $("#strength").value = Math.round(state.look.strength * 100);
  $("#chroma").value = Math.round(state.look.chroma * 100);
  const out = job.output;
  $("#result-summary").textContent = `${job.names.content} in the style of ${job.names.style} · ` +
    `${out.width} × ${out.height} px · made in ${clock(job.elapsed)}` +
    (job.masks === "edited" ? " · with your edited pairings" : job.masks === "hand" ? " · with your masks" : "");
  $("#before").src = job.before;
  $("#side-content").src = job.before;
  $("#side-style").src = job.style;
  $("#result").hidden = false;
  setStep(3);
  await setupLive(job);
  showSegments(job);
  setView(state.view);
  setZoom("fit");
  setSplit(50);
  $("#result").scrollIntoView({ block: "start", behavior: "smooth" });
  $("#result-title").focus({ preventScroll: true });
}

async function setupLive(job) {
  const [before, after] = await Promise.all([loadImage(job.before), loadImage(job.after)]);
  if (!before || !after) throw new Error("The result could not be shown; try again.");
  const W = after.naturalWidth, H = after.naturalHeight;
  const scale = Math.min(1, Math.sqrt(state.config.live_pixels / (W * H)));
  const w = Math.max(1, Math.round(W * scale)), h = Math.max(1, Math.round(H * scale));
  const canvas = $("#after-canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(before, 0, 0, w, h);
  const beforePixels = ctx.getImageData(0, 0, w, h).data;
  ctx.drawImage(after, 0, 0, w, h);
  const image = ctx.getImageData(0, 0, w, h);
  state.live = { lab: Lab.prepare(beforePixels, image.data, w * h), image, ctx, w, h, W, H, full: scale === 1,
                 afterPixels: new Uint8ClampedArray(image.data) };
  renderLook();
}

let pending = 0;
function renderLook() {
  if (pending) return;
  pending = requestAnimationFrame(() => {
    pending = 0;
    const live = state.live;
    if (!live) return;
    const { strength, chroma } = state.look;
    if (strength === 1 && chroma === 1) live.image.data.set(live.afterPixels);
    else Lab.render(live.lab, live.image.data, live.w * live.h, strength, strength * chroma);
    live.ctx.putImageData(live.image, 0, 0);
    const side = $("#side-result");
    side.width = live.w;
    side.height = live.h;
    side.getContext("2d").drawImage($("#after-canvas"), 0, 0);
    markDrawn();
  });
  showLookValues();
}

function markDrawn() {
  // What the canvas shows, for tests and for the curious: the strength and colour last drawn.
  const canvas = $("#after-canvas");
  canvas.dataset.strength = state.look.strength;
  canvas.dataset.chroma = state.look.chroma;
}

function lookQuery() {
  return `strength=${state.look.strength.toFixed(2)}&chroma=${state.look.chroma.toFixed(2)}`;
}

function showLookValues() {
  const job = state.job;
  if (!job) return;
  const { strength, chroma } = state.look;
  $("#strength-value").value = percent(strength);
  $("#chroma-value").value = percent(chroma);
  const out = job.output;
  const stem = `${job.names.content.replace(/\.[^.]*$/, "")}-${job.preset}`;
  const suffix = strength === 1 && chroma === 1 ? "" : `-strength${Math.round(strength * 100)}-colour${Math.round(chroma * 100)}`;
  const link = $("#download");
  link.href = `${job.download}?${lookQuery()}`;
  link.download = `${stem}${suffix}${out.ext}`;
  link.textContent = `Download ${out.format}`;
  const kept = [out.exif && "EXIF", out.icc && "colour profile", out.alpha && "transparency"].filter(Boolean);
  const same = out.format.toUpperCase() === (out.uploaded || "").toUpperCase().replace("WEBP", "WEBP");
  $("#download-note").textContent =
    `${out.bit_depth === 16 ? "16-bit " : ""}${out.format}${out.quality ? ` quality ${out.quality}` : ""}` +
    `${same ? " as uploaded" : ` (uploaded as ${out.uploaded})`}` +
    ` · ${out.width} × ${out.height} px, full size · strength ${percent(strength)}, colour ${percent(chroma)}` +
    (kept.length ? ` · ${kept.join(", ")} kept` : "") + (out.exif ? " · turned upright as shown here" : "");
  if (state.zoom === "full" && !state.live.full) refreshFullView();
}

let fullTimer = 0;
function refreshFullView() {
  clearTimeout(fullTimer);
  fullTimer = setTimeout(() => { $("#after-full").src = `${state.job.view}?${lookQuery()}`; }, 250);
}

function setLook(kind, value) {
  state.look[kind] = Math.min(1, Math.max(0, value / 100));
  renderLook();
}

// Before/after divider: drag anywhere (fit) or the handle (100%), or the keyboard on its slider.
function setSplit(v) {
  const split = Math.min(100, Math.max(0, v));
  $("#compare").style.setProperty("--split", `${split}%`);
  $("#slider").value = Math.round(split);
}

let drag = null;
$("#compare").addEventListener("pointerdown", (e) => {
  if (e.button !== 0) return;
  const viewer = $("#viewer");
  if (state.zoom === "full" && !e.target.closest(".handle")) {
    drag = { pan: true, x: e.clientX, y: e.clientY, left: viewer.scrollLeft, top: viewer.scrollTop };
  } else {
    drag = { pan: false };
    moveSplit(e);
  }
  $("#compare").setPointerCapture(e.pointerId);
  e.preventDefault();
});
$("#compare").addEventListener("pointermove", (e) => {
  if (!drag) return;
  if (drag.pan) {
    $("#viewer").scrollLeft = drag.left - (e.clientX - drag.x);
    $("#viewer").scrollTop = drag.top - (e.clientY - drag.y);
  } else moveSplit(e);
});
for (const type of ["pointerup", "pointercancel"]) $("#compare").addEventListener(type, () => { drag = null; });

function moveSplit(e) {
  const rect = $("#compare").getBoundingClientRect();
  setSplit(((e.clientX - rect.left) / rect.width) * 100);
}

function setView(view) {
  state.view = view;
  for (const b of document.querySelectorAll("[data-view]")) b.setAttribute("aria-pressed", String(b.dataset.view === view));
  $("#viewer").hidden = view !== "compare";
  $("#side").hidden = view !== "side";
  $("#zoom").hidden = view !== "compare";
  $("#zoom-note").hidden = view !== "compare";
  showZoomNote();
}

function setZoom(zoom) {
  state.zoom = zoom;
  for (const b of document.querySelectorAll("[data-zoom]")) b.setAttribute("aria-pressed", String(b.dataset.zoom === zoom));
  const live = state.live;
  const viewer = $("#viewer");
  viewer.classList.toggle("fit", zoom === "fit");
  viewer.classList.toggle("full", zoom === "full");
  const useImage = zoom === "full" && live && !live.full;
  $("#after-canvas").hidden = useImage;
  $("#after-full").hidden = !useImage;
  const compare = $("#compare");
  if (zoom === "full" && live) {
    // 100 %: one photo pixel per screen pixel.
    const width = live.W / devicePixelRatio;
    const height = live.H / devicePixelRatio;
    for (const el of [$("#after-canvas"), $("#after-full")]) {
      el.style.width = `${width}px`;
      el.style.height = `${height}px`;
    }
    if (useImage) refreshFullView();
    requestAnimationFrame(() => {
      viewer.scrollLeft = (viewer.scrollWidth - viewer.clientWidth) / 2;
      viewer.scrollTop = (viewer.scrollHeight - viewer.clientHeight) / 2;
    });
  } else {
    for (const el of [$("#after-canvas"), $("#after-full")]) {
      el.style.removeProperty("width");
      el.style.removeProperty("height");
    }
  }
  compare.classList.toggle("panning", zoom === "full");
  showZoomNote();
}

function showZoomNote() {
  const live = state.live;
  if (!live) return;
  requestAnimationFrame(() => {
    const shown = $("#after-canvas").hidden ? $("#after-full") : $("#after-canvas");
    const scale = (shown.getBoundingClientRect().width * devicePixelRatio) / live.W;
    $("#zoom-note").textContent = state.zoom === "full"
      ? "100 %: drag the photo to look around, drag the handle to compare"
      : Math.abs(scale - 1) < 0.005 ? "shown at its real size" : `shown at ${Math.round(scale * 100)} %`;
  });
}
addEventListener("resize", showZoomNote);

// ---------- the parts: pairings, merge, drop, hand masks ----------

function showSegments(job) {
  const seg = job.segments;
  const list = $("#pairings");
  list.replaceChildren();
  $("#segments").hidden = false;
  const pairings = seg.pairings || [];
  const single = pairings.length <= 1;
  $("#overlays").hidden = single;
  $("#edit-actions").hidden = !seg.editable;
  if (!pairings.length) {
    $("#segments-intro").textContent = "No parts were matched: the whole photo took the look of the whole style photo.";
  } else if (single) {
    $("#segments-intro").textContent = "One look for the whole photo: no separate parts were matched. " +
      "To match parts yourself (sky to sky, skin to skin), use your own masks below.";
  } else {
    const how = job.masks === "hand" ? "from your masks" : job.masks === "edited" ? "as you edited them"
      : "automatically";
    $("#segments-intro").textContent = `photostyle found ${pairings.length} matching parts ${how}. Each part of ` +
      "your photo took its look from the part of the style photo beside it, drawn in the same colour. " +
      "If a match looks wrong, merge it with another or drop it, and run again.";
    $("#overlay-content").src = seg.overlays.content;
    $("#overlay-style").src = seg.overlays.style;
  }
  for (const p of pairings) list.append(pairingItem(p, pairings, seg.editable));
  const masks = seg.images || [];
  const links = masks.map((m) => {
    const a = document.createElement("a");
    a.href = m.url;
    a.download = `${m.name.startsWith("content") ? "mask-your-photo" : "mask-style-photo"}.png`;
    a.textContent = m.name.startsWith("content") ? "your photo's mask" : "the style photo's mask";
    return a;
  });
  const box = $("#mask-downloads");
  box.replaceChildren();
  if (links.length === 2 && pairings.length <= 9) box.append("Start from the masks this run used: ", links[0], " and ", links[1], ".");
  showEdits();
}

function confidenceNote(text) {
  const note = document.createElement("span");
  note.className = "confidence";
  note.textContent = text;
  return note;
}

function pairingItem(p, all, editable) {
  const li = document.createElement("li");
  li.className = "pairing";
  li.dataset.index = p.index;
  li.style.setProperty("--part", `rgb(${p.colour.join(",")})`);
  const number = document.createElement("span");
  number.className = "part-number";
  number.textContent = String(p.index + 1);
  number.setAttribute("aria-hidden", "true");

  const pics = document.createElement("div");
  pics.className = "pair-pics";
  if (p.thumbs && all.length > 1) {
    const left = new Image(), right = new Image();
    left.src = p.thumbs.content;
    left.alt = `Part ${p.index + 1} of your photo: ${p.content.phrase}`;
    right.src = p.thumbs.style;
    right.alt = `Part ${p.index + 1} of the style photo: ${p.style.phrase}`;
    const arrow = document.createElement("span");
    arrow.className = "arrow";
    arrow.textContent = "←";
    arrow.setAttribute("aria-hidden", "true");
    pics.append(left, arrow, right);
  }
  const words = document.createElement("p");
  words.className = "words";
  const side = (who, part) => {
    const line = document.createElement("span");
    line.className = "side-words";
    const name = document.createElement("strong");
    name.textContent = `${who}: `;
    const bits = [p.name, p.label === "all" ? "the whole photo" : part.where, part.hint, part.colour].filter(Boolean);
    line.append(name, `${bits.join(", ")} · ${Math.round(part.coverage * 100)} %`);
    return line;
  };
  const link = document.createElement("span");
  link.className = "took";
  link.textContent = "took its look from";
  words.append(side("Your photo", p.content), link, side("Style photo", p.style));
  if (p.source === "global") {
    words.append(confidenceNote("no part of the style photo is like it, so it took the look of the whole style photo"));
  } else if (typeof p.confidence === "number") {
    words.append(confidenceNote(`match confidence ${Math.round(p.confidence * 100)} %` +
      (p.confidence < 0.3 ? ": check this pairing" : "")));
  }
  const status = document.createElement("p");
  status.className = "edit-status";
  status.setAttribute("aria-live", "polite");
  li.append(number, pics, words, status);

  if (editable) {
    const actions = document.createElement("div");
    actions.className = "pair-actions";
    const label = document.createElement("label");
    label.textContent = "Merge with ";
    const select = document.createElement("select");
    select.className = "merge";
    select.add(new Option("—", ""));
    for (const other of all) {
      if (other.index !== p.index) select.add(new Option(`part ${other.index + 1}: ${other.content.phrase}`, other.index));
    }
    select.setAttribute("aria-label", `Merge part ${p.index + 1} with another part`);
    select.addEventListener("change", () => { if (select.value !== "") merge(p.index, Number(select.value)); });
    label.append(select);
    const drop = document.createElement("button");
    drop.type = "button";
    drop.className = "drop-part";
    drop.textContent = "Drop";
    drop.setAttribute("aria-label", `Drop part ${p.index + 1}: it takes the whole style photo's look`);
    drop.addEventListener("click", () => dropPart(p.index));
    actions.append(label, drop);
    li.append(actions);
  }
  return li;
}

function merge(k, j) {
  const g = state.groups;
  const from = g[k] === null ? k : g[k];
  const into = g[j] === null ? j : g[j];
  if (g[j] === null) g[j] = j;
  for (let i = 0; i < g.length; i++) if (g[i] === from || i === k) g[i] = into;
  showEdits();
}

function dropPart(k) {
  const g = state.groups;
  const members = g.map((v, i) => i).filter((i) => i !== k && g[i] === k);
  for (const i of members) g[i] = members[0];
  g[k] = null;
  showEdits();
}

function showEdits() {
  const g = state.groups || [];
  const changed = g.some((v, i) => v !== i);
  for (const li of document.querySelectorAll("#pairings .pairing")) {
    const k = Number(li.dataset.index);
    const status = li.querySelector(".edit-status");
    li.classList.toggle("dropped", g[k] === null);
    li.classList.toggle("merged", g[k] !== null && g[k] !== k);
    status.textContent = g[k] === null ? "Dropped: this part of your photo will take the look of the whole style photo."
      : g[k] !== k ? `Merged with part ${g[k] + 1}: both parts will share one look.` : "";
    const select = li.querySelector(".merge");
    if (select) select.value = g[k] !== null && g[k] !== k ? String(g[k]) : "";
    const drop = li.querySelector(".drop-part");
    if (drop) drop.disabled = g[k] === null;
  }
  $("#rerun").disabled = !changed || state.following !== null;
  $("#undo-edits").disabled = !changed;
  const kept = new Set(g.filter((v) => v !== null)).size;
  $("#edit-note").textContent = changed ? `${plural(kept, "part", "parts")} will be matched, ` +
    `${plural(g.filter((v) => v === null).length, "part", "parts")} dropped` : "";
}

async function rerunWith(fields) {
  const form = new FormData();
  form.append("preset", $("#preset").value);
  form.append("strength", state.look.strength);
  form.append("chroma", state.look.chroma);
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  await submit(`/api/jobs/${state.job.id}/rerun`, form);
}

// ---------- wiring ----------

$("#preset").addEventListener("change", showPresetHelp);
$("#start").addEventListener("click", start);
$("#cancel").addEventListener("click", cancel);
$("#strength").addEventListener("input", (e) => setLook("strength", Number(e.target.value)));
$("#chroma").addEventListener("input", (e) => setLook("chroma", Number(e.target.value)));
$("#look-reset").addEventListener("click", () => {
  $("#strength").value = $("#chroma").value = 100;
  state.look = { strength: 1, chroma: 1 };
  renderLook();
});
$("#slider").addEventListener("input", (e) => setSplit(Number(e.target.value)));
for (const b of document.querySelectorAll("[data-view]")) b.addEventListener("click", () => setView(b.dataset.view));
for (const b of document.querySelectorAll("[data-zoom]")) b.addEventListener("click", () => setZoom(b.dataset.zoom));
$("#after-full").addEventListener("load", showZoomNote);
$("#rerun").addEventListener("click", () => rerunWith({ groups: JSON.stringify(state.groups) }));
$("#undo-edits").addEventListener("click", () => {
  state.groups = state.groups.map((_, k) => k);
  showEdits();
});
for (const id of ["#content-mask", "#style-mask"]) {
  $(id).addEventListener("change", () => {
    $("#rerun-masks").disabled = !($("#content-mask").files.length && $("#style-mask").files.length);
  });
}
$("#rerun-masks").addEventListener("click", () =>
  rerunWith({ content_mask: $("#content-mask").files[0], style_mask: $("#style-mask").files[0] }));

loadConfig().catch((err) => say(err.message));
