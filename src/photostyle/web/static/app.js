// photostyle page: pick two photos, start a job, poll it, show segments and a before/after slider.
"use strict";

const $ = (sel) => document.querySelector(sel);
const chosen = { content: null, style: null }; // {file} or {example}

function say(text) {
  $("#message").textContent = text || "";
  $("#message").hidden = !text;
}

function ready() {
  $("#start").disabled = !(chosen.content && chosen.style);
}

function choose(kind, choice, src, name) {
  const box = $(`#${kind}-drop`);
  chosen[kind] = choice;
  const img = box.querySelector("img");
  img.src = src;
  img.hidden = false;
  box.querySelector(".hint").hidden = true;
  box.querySelector(".name").textContent = name;
  say("");
  ready();
}

function chooseFile(kind, file) {
  if (!file) return;
  choose(kind, { file }, URL.createObjectURL(file), file.name);
  $(`#${kind}-drop .example`).value = "";
}

for (const box of document.querySelectorAll(".drop")) {
  const kind = box.dataset.kind;
  const zone = box.querySelector(".zone");
  box.querySelector("input[type=file]").addEventListener("change", (e) => chooseFile(kind, e.target.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    chooseFile(kind, e.dataTransfer.files[0]);
  });
  box.querySelector(".example").addEventListener("change", (e) => {
    const name = e.target.value;
    if (name) choose(kind, { example: name }, `/api/examples/${encodeURIComponent(name)}`, name);
  });
}

async function loadConfig() {
  const config = await (await fetch("/api/config")).json();
  for (const [name, p] of Object.entries(config.presets)) {
    const option = new Option(`${name} — ${p.size} px, ${p.iterations} steps`, name);
    $("#preset").add(option);
  }
  $("#preset").value = "fast";
  for (const select of document.querySelectorAll(".example")) {
    for (const name of config.examples) select.add(new Option(name, name));
  }
  $("#limits").textContent =
    `up to ${config.max_upload_mb} MB and ${Math.round(config.max_pixels / 1e6)} megapixels per photo`;
}

async function start() {
  const form = new FormData();
  for (const kind of ["content", "style"]) {
    const c = chosen[kind];
    if (c.file) form.append(kind, c.file);
    else form.append(`${kind}_example`, c.example);
  }
  form.append("preset", $("#preset").value);
  form.append("strength", $("#strength").value);
  $("#start").disabled = true;
  $("#result").hidden = $("#segments").hidden = true;
  say("");
  try {
    const response = await fetch("/api/jobs", { method: "POST", body: form });
    const job = await response.json();
    if (!response.ok) throw new Error(job.error || `the server answered ${response.status}`);
    await follow(job.id);
  } catch (err) {
    say(err.message);
  } finally {
    ready();
  }
}

async function follow(id) {
  $("#progress").hidden = false;
  for (;;) {
    const response = await fetch(`/api/jobs/${id}`);
    const job = await response.json();
    if (!response.ok) throw new Error(job.error);
    showProgress(job);
    if (job.state === "failed") throw new Error(job.error);
    if (job.state === "done") return showResult(job);
    await new Promise((r) => setTimeout(r, 500));
  }
}

function showProgress(job) {
  $("#bar").max = job.total || 1;
  $("#bar").value = job.step;
  const label = { queued: "waiting", running: `step ${job.step} / ${job.total}`, done: "done", failed: "failed" };
  $("#step").textContent = label[job.state];
  $("#terms").textContent = Object.entries(job.terms).map(([k, v]) => `${k} ${v.toPrecision(3)}`).join("  ·  ");
  $("#preview").hidden = !(job.preview && job.state === "running");
  if (!$("#preview").hidden && !$("#preview").src.endsWith(job.preview)) $("#preview").src = job.preview;
}

function showSegments(segments) {
  $("#labels").replaceChildren();
  $("#masks").replaceChildren();
  for (const s of segments.labels) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = s.colour ? `rgb(${s.colour.join(",")})` : "var(--muted)";
    li.append(swatch, s.label);
    $("#labels").append(li);
  }
  for (const m of segments.images) {
    const img = new Image();
    img.src = m.url;
    img.alt = img.title = m.name;
    $("#masks").append(img);
  }
  $("#segments").hidden = segments.labels.length + segments.images.length === 0;
}

function showResult(job) {
  showSegments(job.segments);
  $("#before").src = job.before;
  $("#after").src = job.result;
  $("#download").href = job.result;
  $("#download").download = job.download_name;
  $("#result").hidden = false;
}

// The result fills the page width (up to 75% of the window height), small results scaled up.
$("#after").addEventListener("load", (e) => {
  const img = e.target;
  const scale = Math.min($("#result").clientWidth / img.naturalWidth, (0.75 * innerHeight) / img.naturalHeight);
  img.style.width = `${Math.floor(img.naturalWidth * scale)}px`;
});
$("#slider").addEventListener("input", (e) => {
  const v = e.target.value;
  $("#before").style.clipPath = `inset(0 ${100 - v}% 0 0)`;
  $("#compare").style.setProperty("--split", `${v}%`);
});
$("#strength").addEventListener("input", (e) => {
  $("#strength-value").value = `${Math.round(e.target.value * 100)}%`;
});
$("#start").addEventListener("click", start);
loadConfig().catch((err) => say(`cannot reach the server: ${err.message}`));
