"use strict";
// The run report: summary, ranked gallery, detail view, curation into train.txt / val.txt,
// and the full ranking table loaded chunk by chunk (rows/NNNNN.js call desraRows).
const ITEMS = DATA.items;
const STORE_KEY = "desra-report:" + DATA.id;
let marks = {};
try { marks = JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {}; } catch (e) { marks = {}; }
function saveMarks() { try { localStorage.setItem(STORE_KEY, JSON.stringify(marks)); } catch (e) { /* storage off: keep in memory */ } }

// desra_fast.jobs.select.split and train_count, line for line (same float operations).
function roundHalfEven(x) { const f = Math.floor(x), d = x - f; return d > 0.5 ? f + 1 : d < 0.5 ? f : (f % 2 === 0 ? f : f + 1); }
function split(n, train) {
  train = Math.min(train, n);
  if (!train) return [];
  const s = new Set();
  for (let j = 0; j < train; j++) s.add(Math.min(n - 1, Math.floor((j + 0.5) * n / train)));
  return [...s].sort((a, b) => a - b);
}
function lists() {
  const kept = ITEMS.filter((it) => marks[it.lr] !== "reject").map((it) => it.lr);
  const t = Math.max(0, parseInt(trainInput.value, 10) || 0);
  const idx = new Set(split(kept.length, roundHalfEven(t * kept.length / DATA.top)));
  const train = kept.filter((_, i) => idx.has(i)), val = kept.filter((_, i) => !idx.has(i));
  return {train, val};
}
const asText = (names) => names.map((n) => n + "\n").join("");

document.getElementById("title").textContent = "DeSRA report: " + DATA.run;
document.getElementById("subtitle").textContent = "ranked by " + DATA.by + " as desra-fast select ranks, top " + DATA.top + " · generated " + DATA.generated;
const app = document.getElementById("app");

// Summary.
const c = DATA.counts;
app.append(el("h2", {text: "Summary"}), el("div", {cls: "stats", id: "summary"},
  [["images", c.images], ["done", c.done], ["failed", c.failed], ["with artifacts", c.with_artifacts],
   ["manifest lines", c.lines], ["corrupt lines skipped", c.corrupt_lines]].map(([k, v]) =>
    el("div", {cls: "stat", "data-stat": k}, el("b", {text: fmt(v)}), el("span", {cls: "muted", text: k})))));
app.append(el("div", {cls: "charts"},
  histogram(DATA.hist.fraction, "artifact fraction (images with regions)", (v) => pct(v, 1)),
  histogram(DATA.hist.area, "region area, pixels (log scale)", (v) => fmt(Math.round(v)))));
if (DATA.has_seg) {
  const total = DATA.classes.reduce((s, kv) => s + kv[1], 0) || 1;
  app.append(el("h2", {text: "ADE20K classes under the regions (top " + ITEMS.length + " images)"}),
    el("div", {id: "classes"}, DATA.classes.slice(0, 15).map(([name, px]) =>
      el("div", {cls: "bar-row"}, el("span", {style: "width:160px", text: name}),
        el("div", {cls: "fill", style: "width:" + Math.max(1, 300 * px / total) + "px"}),
        el("span", {cls: "muted", text: pct(px / total, 1)})))));
}

// Curation toolbar.
const trainInput = el("input", {type: "number", min: "0", value: String(DATA.train), id: "train-n", style: "width:5em"});
const counter = el("span", {id: "counter", cls: "muted"});
app.append(el("h2", {text: "Top " + ITEMS.length + " images"}), el("div", {cls: "toolbar"},
  el("span", {text: "train"}), trainInput,
  el("button", {id: "dl-train", text: "download train.txt", on: {click: () => downloadText("train.txt", asText(lists().train))}}),
  el("button", {id: "dl-val", text: "download val.txt", on: {click: () => downloadText("val.txt", asText(lists().val))}}),
  el("button", {id: "clear-marks", text: "clear marks", on: {click: () => { marks = {}; saveMarks(); refresh(); }}}),
  counter,
  el("span", {cls: "muted"}, "keys: ", el("kbd", {text: "j"}), "/", el("kbd", {text: "k"}), " next/previous, ",
    el("kbd", {text: "a"}), " accept, ", el("kbd", {text: "r"}), " reject, ", el("kbd", {text: "u"}), " unmark, ",
    el("kbd", {text: "Enter"}), " details, ", el("kbd", {text: "Esc"}), " close")));

let current = 0;
const gallery = el("div", {cls: "gallery", id: "gallery"});
const cards = ITEMS.map((it, i) => {
  const d = it.d || {};
  const card = el("div", {cls: "card", tabindex: "0", "data-rank": String(it.rank), on: {focus: () => setCurrent(i, false)}},
    it.thumb ? el("img", {cls: "thumb", src: it.thumb, alt: "overlay of " + it.lr, loading: "lazy", on: {click: () => openDetail(i)}})
             : el("div", {cls: "body warn", text: "no picture"}),
    el("div", {cls: "body"},
      el("div", {cls: "name", text: "#" + it.rank + "  " + it.lr}),
      kv([["artifact fraction", pct(it.fraction)], ["regions", fmt(it.regions)],
          ["largest region", fmt((it.areas || [])[0]) + " px"], ["D mean / min", fmt(d.mean) + " / " + fmt(d.min)],
          ["D p1 / p5", fmt(d.p1) + " / " + fmt(d.p5)], ["D below threshold", pct(d.below_threshold)]]),
      it.missing.length ? el("div", {cls: "warn missing", text: "missing: " + it.missing.join("; ")}) : null,
      el("div", {cls: "actions"},
        el("button", {cls: "accept", text: "accept (a)", on: {click: () => mark(i, "accept")}}),
        el("button", {cls: "reject", text: "reject (r)", on: {click: () => mark(i, "reject")}}),
        el("button", {cls: "open", text: "details", on: {click: () => openDetail(i)}}))));
  gallery.append(card);
  return card;
});
app.append(gallery);

function mark(i, what) {
  const lr = ITEMS[i].lr;
  if (what === null || marks[lr] === what) delete marks[lr]; else marks[lr] = what;
  saveMarks();
  refresh();
}
function refresh() {
  cards.forEach((card, i) => {
    const m = marks[ITEMS[i].lr];
    card.classList.toggle("accepted", m === "accept");
    card.classList.toggle("rejected", m === "reject");
    card.querySelector("button.accept").classList.toggle("on-accept", m === "accept");
    card.querySelector("button.reject").classList.toggle("on-reject", m === "reject");
  });
  const l = lists();
  const acc = ITEMS.filter((it) => marks[it.lr] === "accept").length, rej = ITEMS.filter((it) => marks[it.lr] === "reject").length;
  counter.textContent = acc + " accepted, " + rej + " rejected, " + (ITEMS.length - acc - rej) + " unmarked → train " + l.train.length + ", val " + l.val.length;
  if (!detail.hidden) renderDetail();
}
function setCurrent(i, focus) {
  if (!ITEMS.length) return;
  current = Math.max(0, Math.min(ITEMS.length - 1, i));
  cards.forEach((card, j) => card.classList.toggle("current", j === current));
  if (focus) cards[current].focus({preventScroll: true}), cards[current].scrollIntoView({block: "nearest"});
}

// Detail view (#detail): whole image GAN-SR / MSE-SR and GAN-SR / repair() sliders, every region zoomed.
const detail = el("section", {id: "detail", hidden: ""});
document.body.append(detail);
function openDetail(i) { setCurrent(i, false); detail.hidden = false; renderDetail(); history.replaceState(null, "", "#img-" + ITEMS[current].rank); }
function closeDetail() { detail.hidden = true; history.replaceState(null, "", "#"); setCurrent(current, true); }
function renderDetail() {
  const it = ITEMS[current], d = it.d || {};
  const m = marks[it.lr];
  const zoom = (cr) => Math.max(1, Math.min(4, Math.floor(540 / Math.max(1, cr.w, cr.h))));  // whole pixels
  detail.replaceChildren(...[
    el("div", {cls: "toolbar"},
      el("button", {text: "← previous (k)", on: {click: () => { setCurrent(current - 1); renderDetail(); }}}),
      el("button", {text: "next (j) →", on: {click: () => { setCurrent(current + 1); renderDetail(); }}}),
      el("button", {cls: "accept" + (m === "accept" ? " on-accept" : ""), text: "accept (a)", on: {click: () => mark(current, "accept")}}),
      el("button", {cls: "reject" + (m === "reject" ? " on-reject" : ""), text: "reject (r)", on: {click: () => mark(current, "reject")}}),
      el("button", {id: "close-detail", text: "close (Esc)", on: {click: closeDetail}}),
      el("b", {cls: "name", text: "#" + it.rank + "  " + it.lr})),
    kv([["artifact fraction", pct(it.fraction)], ["regions", fmt(it.regions)], ["areas", (it.areas || []).map((a) => fmt(a)).join(", ")],
        ["D mean / min / p1 / p5", [d.mean, d.min, d.p1, d.p5].map((v) => fmt(v)).join(" / ")], ["D below threshold", pct(d.below_threshold)],
        ["SR size", it.size ? it.size[1] + " x " + it.size[0] : "n/a"]]),
    it.missing.length ? el("p", {cls: "warn missing", text: "missing: " + it.missing.join("; ")}) : null,
    it.classes.length ? el("p", {cls: "muted", text: "ADE20K classes under the regions: " + it.classes.slice(0, 6).map(([n, px]) => n + " (" + px + " px)").join(", ")}) : null,
    it.full ? el("div", {cls: "pair"},
      el("div", {}, el("h3", {text: "GAN-SR ↔ MSE-SR"}), compare(it.full.gan, it.full.mse, "GAN-SR", "MSE-SR", {"data-kind": "gan-mse"})),
      el("div", {}, el("h3", {text: "GAN-SR ↔ repair() (MSE-SR inside the regions)"}), compare(it.full.gan, it.full.fix, "GAN-SR", "repaired", {"data-kind": "gan-fix"})))
            : el("p", {cls: "warn", text: "no SR pair to compare (run desra-fast run with --save-sr png for these images)"}),
    it.crops.map((cr, k) => el("div", {cls: "region"},
      el("h3", {text: "region " + (k + 1) + ": " + fmt(cr.area) + " px, crop " + cr.w + " x " + cr.h + " at (" + cr.x + ", " + cr.y + "), shown x" + zoom(cr)}),
      el("div", {cls: "triple"}, [["GAN-SR", cr.gan], ["MSE-SR", cr.mse], ["mask", cr.mask]].map(([cap, src]) =>
        el("figure", {}, el("img", {src, alt: cap, width: String(cr.w * zoom(cr)), height: String(cr.h * zoom(cr))}), el("figcaption", {text: cap})))),
      el("div", {cls: "pair"},
        el("div", {}, compare(cr.gan, cr.mse, "GAN-SR", "MSE-SR", {"data-kind": "crop-gan-mse", style: "width:" + cr.w * zoom(cr) + "px"})),
        el("div", {}, compare(cr.gan, cr.fix, "GAN-SR", "repaired", {"data-kind": "crop-gan-fix", style: "width:" + cr.w * zoom(cr) + "px"})))))
  ].flat(Infinity).filter((x) => x !== null && x !== undefined));
}

document.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey || !ITEMS.length) return;
  const k = ev.key;
  if (k === "j" || k === "ArrowRight") { setCurrent(current + 1, detail.hidden); if (!detail.hidden) renderDetail(); }
  else if (k === "k" || k === "ArrowLeft") { setCurrent(current - 1, detail.hidden); if (!detail.hidden) renderDetail(); }
  else if (k === "a") mark(current, "accept");
  else if (k === "r" || k === "x") mark(current, "reject");
  else if (k === "u") mark(current, null);
  else if (k === "Enter" || k === "o") openDetail(current);
  else if (k === "Escape" && !detail.hidden) closeDetail();
  else return;
  ev.preventDefault();
});

// The full ranking, loaded chunk after chunk with script elements (file:// allows no fetch).
const ROWS = [];
const col = (i) => (r) => r[i];
const table = dataTable([
  {name: "rank", get: col(0), desc: false},
  {name: "image", get: col(1), text: (r) => r[1], cls: "text", search: true},
  {name: "fraction", get: col(2), text: (r) => pct(r[2]), desc: true},
  {name: "regions", get: col(3), desc: true},
  {name: "largest region", get: col(4), desc: true},
  {name: "D mean", get: col(5)}, {name: "D min", get: col(6)},
  {name: "D below thr.", get: col(7), text: (r) => pct(r[7]), desc: true},
  {name: "error", get: col(8), text: (r) => r[8] || "", cls: "text", search: true},
], ROWS, 500, (tr, r) => {
  if (r[0] !== null && r[0] <= ITEMS.length) { tr.style.cursor = "zoom-in"; tr.addEventListener("click", () => openDetail(r[0] - 1)); }
});
const loadStatus = el("p", {id: "table-status", cls: "muted", text: "loading…"});
app.append(el("h2", {text: "Full ranking"}), loadStatus, el("div", {id: "rank-table"}, table.node));
let loaded = 0;
window.desraRows = (n, rows) => {
  for (const r of rows) ROWS.push(r);
  loaded = n + 1;
  table.render();
  if (loaded < DATA.chunks) loadChunk(loaded);
  else { loadStatus.textContent = "all " + ROWS.length + " images loaded"; loadStatus.dataset.done = "1"; }
};
function loadChunk(n) {
  const s = el("script", {src: "rows/" + String(n).padStart(5, "0") + ".js"});
  s.addEventListener("error", () => { loadStatus.textContent = "rows/" + String(n).padStart(5, "0") + ".js is missing"; loadStatus.classList.add("warn"); });
  document.body.append(s);
}
refresh();
setCurrent(0, false);
const m0 = /^#img-(\d+)$/.exec(location.hash);
if (m0 && +m0[1] >= 1 && +m0[1] <= ITEMS.length) openDetail(+m0[1] - 1);
loadChunk(0);
