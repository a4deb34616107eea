/* medseg review page: sortable tables, and a NiiVue viewer of each case's own files.
 * Its data (<script id="medseg-data" type="application/json">, written by medseg/reporting/review.py):
 *   {"labels": [{"value", "name", "colour": [r, g, b]}], "cases": {case_id: {"bundle": "cases/<case>.js",
 *    "channels": [{"name", "volume", "frame"}], "prediction": key | null, "truth": key | null,
 *    "focus": [x, y, z] mm | null, "overlay": PNG | null}}}
 * A bundle calls medsegCase(case_id, [{"key", "name", "base64"}]): the exact bytes of the case's files. It is
 * injected as a <script> when the case is opened (file:// pages may not fetch() files, but may load scripts).
 * The address may say what to show: #case=ID&mode=side&opacity=0.8&planes=axial&modality=flair
 */
"use strict";

(function () {
  const DATA = JSON.parse(document.getElementById("medseg-data").textContent);
  const CASES = DATA.cases || {};
  const LABELS = new Map((DATA.labels || []).map((l) => [l.value, l]));
  const params = new URLSearchParams(location.hash.slice(1));
  const state = {
    caseId: null,
    items: null, // key -> {name, base64} of the open case
    modality: params.get("modality") || null,
    mode: params.get("mode") || "contours", // contours: truth outlined on the prediction (one viewer); side: two
    opacity: params.has("opacity") ? Number(params.get("opacity")) : 0.5,
    planes: params.get("planes") || "all",
    panes: {}, // "truth" | "prediction" -> {nv, image, prediction, truth} (NVImage or null)
    pending: {},
    generation: 0,
    timings: {},
  };

  // ------------------------------------------------------------------------------------------- tables
  function sortValue(cell) {
    const text = cell.dataset.sort ?? cell.textContent;
    const number = parseFloat(text);
    return text === "" ? null : Number.isNaN(number) ? text : number;
  }

  function sortTable(table, column, ascending) {
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = sortValue(a.cells[column]);
      const y = sortValue(b.cells[column]);
      if (x === null || y === null) return (x === null) - (y === null); // blanks last
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
    Array.from(table.tHead.rows[0].cells).forEach((th, i) => {
      th.classList.toggle("sorted-up", i === column && ascending);
      th.classList.toggle("sorted-down", i === column && !ascending);
    });
  }

  function setUpTable(table) {
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach((th, i) => {
      th.title = "sort";
      th.addEventListener("click", () => sortTable(table, i, !th.classList.contains("sorted-up")));
    });
    const first = heads.findIndex((th) => th.dataset.key === table.dataset.sort);
    if (first >= 0) heads[first].classList.add("sorted-up");
    for (const row of table.tBodies[0].rows) {
      if (CASES[row.dataset.case]) {
        row.classList.add("viewable");
        row.addEventListener("click", () => openCase(row.dataset.case));
      }
    }
  }

  // ------------------------------------------------------------------------------------------- loading
  window.medsegCase = function (caseId, items) {
    const resolve = state.pending[caseId];
    delete state.pending[caseId];
    if (resolve) resolve(Object.fromEntries(items.map((item) => [item.key, item])));
  };

  function readBundle(caseId) {
    return new Promise((resolve, reject) => {
      state.pending[caseId] = resolve;
      const script = document.createElement("script");
      script.src = CASES[caseId].bundle.split("/").map(encodeURIComponent).join("/");
      script.onload = () => script.remove(); // its bytes now live in state.items only
      script.onerror = () => reject(new Error(`cannot read ${script.src} beside this page`));
      document.head.appendChild(script);
    });
  }

  function labelLut(outline) {
    const top = Math.max(0, ...LABELS.keys());
    const lut = { R: [], G: [], B: [], A: [], I: [], labels: [] };
    for (let v = 0; v <= top; v++) {
      const label = LABELS.get(v);
      const colour = outline ? [255, 255, 255] : label ? label.colour : [0, 0, 0];
      ["R", "G", "B"].forEach((channel, i) => lut[channel].push(colour[i]));
      lut.A.push(label ? 255 : 0);
      lut.I.push(v);
      lut.labels.push(label ? label.name : v === 0 ? "background" : String(v));
    }
    return lut;
  }

  async function loadVolume(key) {
    // each file is decoded once per case; each pane gets its own copy (a volume belongs to one viewer)
    const item = state.items[key];
    if (!item.decoded) item.decoded = niivue.NVImage.loadFromBase64({ base64: item.base64, name: item.name });
    const decoded = await item.decoded;
    const copy = decoded.clone(); // clone() keeps the header and voxels; the rest NiiVue needs is copied here
    for (const field of ["name", "nFrame4D", "nTotalFrame4D", "nVox3D"]) copy[field] = decoded[field];
    return copy;
  }

  async function loadLabel(key, outline) {
    const volume = await loadVolume(key);
    volume.hdr.intent_code = 1002; // NIfTI "label": NiiVue then outlines it when asked
    volume.setColormapLabel(labelLut(outline));
    return volume;
  }

  function mark(name) {
    // stage times (ms since the page began), for whoever measures the page: body[data-timings]
    state.timings[name] = Math.round(performance.now());
    document.body.dataset.timings = JSON.stringify(state.timings);
  }

  // ------------------------------------------------------------------------------------------- viewer
  function paneNames(info) {
    if (!info.truth) return ["prediction"];
    return state.mode === "contours" ? ["prediction"] : ["truth", "prediction"];
  }

  function sliceType(nv) {
    return {
      all: nv.sliceTypeMultiplanar,
      axial: nv.sliceTypeAxial,
      coronal: nv.sliceTypeCoronal,
      sagittal: nv.sliceTypeSagittal,
      render: nv.sliceTypeRender,
    }[state.planes];
  }

  async function viewerFor(name) {
    if (!state.panes[name]) {
      const nv = new niivue.Niivue({
        backColor: [0.06, 0.06, 0.08, 1],
        crosshairColor: [0.45, 0.45, 1, 0.8], // no label's colour
        show3Dcrosshair: true,
        isColorbar: false,
        logLevel: "error",
        multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS,
      });
      await nv.attachTo(`canvas-${name}`);
      const canvas = document.getElementById(`canvas-${name}`);
      canvas.addEventListener("mousemove", (event) => readout(name, event));
      nv.onLocationChange = () => readout(name, null);
      state.panes[name] = { nv };
    }
    return state.panes[name];
  }

  async function fillPane(name, info, generation) {
    const pane = await viewerFor(name);
    const nv = pane.nv;
    const channel = info.channels.find((c) => c.name === state.modality) || info.channels[0] || null;
    const contours = state.mode === "contours" && info.truth;
    const layers = [];
    layers.push(channel ? await loadVolume(channel.volume) : null);
    layers.push(name === "prediction" && info.prediction ? await loadLabel(info.prediction, false) : null);
    layers.push(info.truth && (name === "truth" || contours) ? await loadLabel(info.truth, contours) : null);
    if (generation !== state.generation) return; // another case or setting was chosen meanwhile
    const [image, prediction, truth] = layers;
    if (prediction) prediction.opacity = state.opacity;
    if (truth) truth.opacity = contours ? 0.001 : state.opacity; // an outline only (0 would skip the layer)
    nv.opts.atlasOutline = contours ? 1 : 0;
    // every change of volumes redraws all layers (on the CPU without a GPU): replace them in one change
    const present = layers.filter(Boolean);
    nv.volumes = present.slice(0, -1);
    nv.addVolume(present[present.length - 1]);
    if (image && channel.frame !== null && channel.frame !== undefined) nv.setFrame4D(image.id, channel.frame);
    Object.assign(pane, { image, prediction, truth, channel });
    nv.setSliceType(sliceType(nv));
    focus(nv, info);
  }

  function focus(nv, info) {
    if (info.focus) nv.scene.crosshairPos = nv.mm2frac(info.focus); // the centre of the truth, else prediction
    nv.drawScene();
  }

  async function render() {
    const generation = ++state.generation;
    const info = CASES[state.caseId];
    const names = paneNames(info);
    for (const name of ["truth", "prediction"]) {
      document.getElementById(`pane-${name}`).hidden = !names.includes(name);
    }
    document.getElementById("caption-prediction").textContent =
      state.mode === "contours" && info.truth ? "prediction (filled), truth (white outline)" : "prediction";
    for (const name of names) {
      await fillPane(name, info, generation);
      mark(`drawn ${name}`);
    }
    if (generation !== state.generation) return;
    const shown = names.map((n) => state.panes[n].nv);
    for (const nv of shown) {
      nv.resizeListener();
      nv.broadcastTo(shown.filter((other) => other !== nv), { "2d": true, "3d": true });
    }
    setWindowControls();
    legend(info);
    document.body.dataset.viewer = "ready";
    document.body.dataset.readyMs = String(Math.round(performance.now()));
  }

  async function openCase(caseId) {
    if (!CASES[caseId]) return;
    const section = document.getElementById("viewer");
    section.hidden = false;
    document.body.dataset.viewer = "loading";
    document.body.dataset.case = caseId;
    document.querySelectorAll("tr.open").forEach((row) => row.classList.remove("open"));
    document.querySelectorAll(`tr[data-case="${CSS.escape(caseId)}"]`).forEach((row) => row.classList.add("open"));
    document.getElementById("viewer-title").textContent = `${caseId}: loading…`;
    state.caseId = caseId;
    try {
      state.timings = { open: Math.round(performance.now()) };
      const items = await readBundle(caseId);
      mark("bundle read");
      if (state.caseId !== caseId) return;
      state.items = items;
      buildControls(CASES[caseId]);
      await render();
      document.getElementById("viewer-title").textContent = caseId;
      const png = CASES[caseId].overlay;
      document.getElementById("viewer-links").innerHTML = png ? `<a href="${encodeURI(png)}">static picture</a>` : "";
    } catch (error) {
      document.body.dataset.viewer = "error";
      document.getElementById("viewer-title").textContent = `${caseId}: ${error.message}`;
    }
  }

  // ------------------------------------------------------------------------------------------- controls
  function buildControls(info) {
    const control = (label, html) => `<label>${label} ${html}</label>`;
    const options = (values, chosen) =>
      values.map(([v, text]) => `<option value="${v}"${v === chosen ? " selected" : ""}>${text}</option>`).join("");
    if (!info.channels.some((c) => c.name === state.modality)) {
      // as the PNGs: flair of the four brain-tumour channels, else the first
      state.modality = (info.channels.length === 4 ? info.channels[3] : info.channels[0])?.name ?? null;
    }
    const parts = [];
    if (info.channels.length) {
      const names = info.channels.map((c) => [c.name, c.name]);
      parts.push(control("scan", `<select id="c-modality">${options(names, state.modality)}</select>`));
    }
    if (info.truth) {
      const modes = [["contours", "prediction, truth outlined"], ["side", "truth | prediction"]];
      parts.push(control("show", `<select id="c-mode">${options(modes, state.mode)}</select>`));
    }
    const planes = [["all", "3 planes + 3-D"], ["axial", "axial"], ["coronal", "coronal"], ["sagittal", "sagittal"],
      ["render", "3-D"]];
    parts.push(control("view", `<select id="c-planes">${options(planes, state.planes)}</select>`));
    parts.push(control("opacity", `<input id="c-opacity" type="range" min="0" max="1" step="0.05" value="${state.opacity}">`));
    parts.push(control("level", `<input id="c-level" type="range" step="any">`));
    parts.push(control("window", `<input id="c-width" type="range" step="any">`));
    parts.push(`<button id="c-focus" type="button">centre on the lesion</button>`);
    parts.push(`<button id="c-prev" type="button">◀ previous</button><button id="c-next" type="button">next ▶</button>`);
    document.getElementById("controls").innerHTML = parts.join("");
    const on = (id, event, handler) => document.getElementById(id)?.addEventListener(event, handler);
    on("c-modality", "change", (e) => { state.modality = e.target.value; render(); });
    on("c-mode", "change", (e) => { state.mode = e.target.value; render(); });
    on("c-planes", "change", (e) => {
      state.planes = e.target.value;
      for (const pane of Object.values(state.panes)) pane.nv.setSliceType(sliceType(pane.nv));
    });
    on("c-opacity", "input", (e) => {
      state.opacity = Number(e.target.value);
      for (const pane of visiblePanes()) {
        const contours = state.mode === "contours" && pane.truth && pane.prediction;
        if (pane.prediction) pane.prediction.opacity = state.opacity;
        if (pane.truth && !contours) pane.truth.opacity = state.opacity;
        pane.nv.updateGLVolume();
      }
    });
    on("c-level", "input", applyWindow);
    on("c-width", "input", applyWindow);
    on("c-focus", "click", () => visiblePanes().forEach((pane) => focus(pane.nv, info)));
    on("c-prev", "click", () => step(-1));
    on("c-next", "click", () => step(1));
  }

  function visiblePanes() {
    const shown = ([name]) => !document.getElementById(`pane-${name}`).hidden;
    return Object.entries(state.panes).filter(shown).map(([, pane]) => pane);
  }

  function step(direction) {
    const rows = Array.from(document.querySelectorAll("#cases tbody tr.viewable"));
    const index = rows.findIndex((row) => row.dataset.case === state.caseId);
    const next = rows[(index + direction + rows.length) % rows.length];
    if (next) openCase(next.dataset.case);
  }

  function setWindowControls() {
    const image = visiblePanes().map((p) => p.image).find(Boolean);
    const level = document.getElementById("c-level");
    const width = document.getElementById("c-width");
    if (!image || !level) return;
    const lo = image.global_min;
    const hi = image.global_max > lo ? image.global_max : lo + 1;
    level.min = lo;
    level.max = hi;
    level.value = (image.cal_min + image.cal_max) / 2;
    width.min = (hi - lo) / 200;
    width.max = hi - lo;
    width.value = image.cal_max - image.cal_min;
  }

  function applyWindow() {
    const level = Number(document.getElementById("c-level").value);
    const width = Number(document.getElementById("c-width").value);
    for (const pane of visiblePanes()) {
      if (!pane.image) continue;
      pane.image.cal_min = level - width / 2;
      pane.image.cal_max = level + width / 2;
      pane.nv.updateGLVolume();
    }
  }

  function legend(info) {
    const swatch = (colour, text) =>
      `<span class="swatch"><i style="background: rgb(${colour.join(",")})"></i>${text}</span>`;
    const parts = Array.from(LABELS.values()).map((l) => swatch(l.colour, `${l.value} ${l.name}`));
    if (state.mode === "contours" && info.truth) parts.push(swatch([255, 255, 255], "truth (outline)"));
    document.getElementById("legend").innerHTML = parts.join("");
  }

  // ------------------------------------------------------------------------------------------- read-out
  function fileVoxel(volume, mm) {
    // voxel index in the file's own order: the inverse of its affine (NIfTI sform, rows) applied to mm
    const a = volume.hdr.affine;
    const m = [0, 1, 2].map((r) => [a[r][0], a[r][1], a[r][2]]);
    const d = [0, 1, 2].map((r) => mm[r] - a[r][3]);
    const det = (c) => c[0][0] * (c[1][1] * c[2][2] - c[1][2] * c[2][1]) - c[0][1] * (c[1][0] * c[2][2] - c[1][2] * c[2][0])
      + c[0][2] * (c[1][0] * c[2][1] - c[1][1] * c[2][0]);
    // Cramer's rule: column col of m replaced by d
    return [0, 1, 2].map((col) => Math.round(det(m.map((row, r) => row.map((v, c) => (c === col ? d[r] : v)))) / det(m)));
  }

  function valueAt(volume, mm) {
    // NiiVue's mm2vox and getValue work in its RAS-ordered voxels; the read-out names the file's own index
    if (!volume) return null;
    const ras = Array.from(volume.mm2vox(mm));
    if (ras.some((v, i) => v < 0 || v >= volume.dimsRAS[i + 1])) return null;
    return { vox: fileVoxel(volume, mm), value: volume.getValue(ras[0], ras[1], ras[2], volume.frame4D || 0) };
  }

  function labelName(found) {
    if (!found) return "–";
    const value = Math.round(found.value);
    return value === 0 ? "background" : LABELS.get(value)?.name ?? String(value);
  }

  function readout(name, event) {
    const pane = state.panes[name];
    if (!pane || !pane.nv.volumes.length) return;
    const nv = pane.nv;
    let frac = nv.scene.crosshairPos;
    let where = "crosshair";
    if (event) {
      const rect = event.target.getBoundingClientRect();
      const dpr = nv.uiData.dpr || window.devicePixelRatio || 1;
      frac = nv.canvasPos2frac([(event.clientX - rect.left) * dpr, (event.clientY - rect.top) * dpr]);
      where = "cursor";
      if (!frac || frac[0] < 0) return;
    }
    const mm = Array.from(nv.frac2mm(frac)).slice(0, 3);
    const prediction = state.panes.prediction?.prediction;
    const truth = state.panes.truth?.truth || state.panes.prediction?.truth;
    const image = valueAt(pane.image, mm);
    const parts = [`${where}: ${mm.map((v) => v.toFixed(1)).join(", ")} mm`];
    if (image) parts.push(`voxel [${image.vox.join(", ")}]`, `${pane.channel.name} ${Number(image.value.toPrecision(5))}`);
    if (prediction) parts.push(`prediction: ${labelName(valueAt(prediction, mm))}`);
    if (truth) parts.push(`truth: ${labelName(valueAt(truth, mm))}`);
    document.getElementById("readout").textContent = parts.join("  ·  ");
  }

  // ------------------------------------------------------------------------------------------- start
  document.querySelectorAll("table.sortable").forEach(setUpTable);
  const first = params.get("case") || document.querySelector("#cases tbody tr.viewable")?.dataset.case;
  if (first && CASES[first]) {
    if (typeof niivue === "undefined") {
      document.getElementById("viewer").hidden = false;
      document.getElementById("viewer-title").textContent = "the viewer (niivue.umd.js beside this page) did not load";
    } else {
      openCase(first);
    }
  }
})();
