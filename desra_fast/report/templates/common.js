"use strict";
// Shared by the run and the evaluation report. Everything shown comes from the JSON data
// element and is put into the page with textContent / setAttribute only (never as markup), so
// file names are displayed, never interpreted.
const DATA = JSON.parse(document.getElementById("report-data").textContent);

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") e.textContent = v;
    else if (k === "cls") e.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

// Numbers as shown: n/a for missing (NaN/inf are written as null), fixed digits otherwise.
function fmt(v, digits) {
  if (v === null || v === undefined || typeof v !== "number") return "n/a";
  if (digits === undefined) return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toPrecision(4);
  return v.toFixed(digits);
}
function pct(v, digits) { return v === null || v === undefined ? "n/a" : (100 * v).toFixed(digits === undefined ? 2 : digits) + " %"; }

function kv(pairs) {
  return el("div", {cls: "kv"}, pairs.map(([k, v]) => [el("span", {text: k}), el("span", {text: v})]));
}

// Drag slider between two pictures of the same size: the left picture is the base, the right
// one is drawn over it and clipped to the part right of the handle.
function compare(left, right, leftLabel, rightLabel, attrs) {
  const top = el("img", {cls: "top", src: right, alt: rightLabel, draggable: "false"});
  const base = el("img", {src: left, alt: leftLabel, draggable: "false"});
  const handle = el("div", {cls: "handle"});
  const box = el("div", Object.assign({cls: "compare"}, attrs || {}), base, top, handle,
                 el("span", {cls: "lab l", text: leftLabel}), el("span", {cls: "lab r", text: rightLabel}));
  const range = el("input", {type: "range", min: "0", max: "100", step: "0.5", value: "50", cls: "slider",
                             "aria-label": leftLabel + " / " + rightLabel});
  const set = (p) => {
    p = Math.max(0, Math.min(100, p));
    range.value = String(p);
    top.style.clipPath = "inset(0 0 0 " + p + "%)";
    handle.style.left = p + "%";
    box.dataset.pos = String(p);
  };
  range.addEventListener("input", () => set(parseFloat(range.value)));
  let dragging = false;
  const fromEvent = (ev) => { const r = box.getBoundingClientRect(); set(100 * (ev.clientX - r.left) / r.width); };
  box.addEventListener("pointerdown", (ev) => { dragging = true; box.setPointerCapture(ev.pointerId); fromEvent(ev); });
  box.addEventListener("pointermove", (ev) => { if (dragging) fromEvent(ev); });
  box.addEventListener("pointerup", () => { dragging = false; });
  set(50);
  return el("div", {cls: "cmp-wrap"}, box, range);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// Inline SVG bar chart of a histogram ({edges: n+1 numbers, counts: n}).
function histogram(h, title, label) {
  const W = 420, H = 170, pad = 28;
  const root = svg("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title});
  const counts = h.counts || [];
  const max = Math.max(1, ...counts);
  const bw = (W - 2 * pad) / Math.max(1, counts.length);
  counts.forEach((c, i) => {
    const bh = (H - 2 * pad) * c / max;
    const r = svg("rect", {"class": "bar", x: pad + i * bw + 1, y: H - pad - bh, width: Math.max(1, bw - 2), height: bh});
    r.append(svg("title", {}, label(h.edges[i]) + " to " + label(h.edges[i + 1]) + ": " + c));
    root.append(r);
  });
  root.append(svg("line", {x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: "#9aa1b0"}));
  if (counts.length) {
    root.append(svg("text", {x: pad, y: H - pad + 14}, label(h.edges[0])));
    root.append(svg("text", {x: W - pad, y: H - pad + 14, "text-anchor": "end"}, label(h.edges[counts.length])));
  }
  root.append(svg("text", {x: pad, y: 14}, "max " + max));
  return el("div", {cls: "chart"}, el("div", {text: title}), counts.length ? root : el("p", {cls: "muted", text: "no data"}));
}

function downloadText(name, text) {
  const url = URL.createObjectURL(new Blob([text], {type: "text/plain;charset=utf-8"}));
  const a = el("a", {href: url, download: name, style: "display:none"});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
}

// Sortable, filterable table over an array of rows (arrays); cols: [{name, get(row), text(row), cls}].
// Shows at most `limit` matching rows (the filter narrows them).
function dataTable(cols, rows, limit, onRow) {
  let sortCol = null, sortDir = 1, filter = "";
  const tbody = el("tbody");
  const status = el("span", {cls: "muted"});
  const input = el("input", {type: "search", placeholder: "filter (name or error)", "aria-label": "filter"});
  const head = el("tr", {}, cols.map((c, i) => el("th", {cls: c.cls || "", text: c.name, on: {click: () => {
    sortDir = sortCol === i ? -sortDir : (c.desc ? -1 : 1); sortCol = i; render();
  }}})));
  function render() {
    let view = filter ? rows.filter((r) => cols.some((c) => c.search && String(c.get(r) || "").toLowerCase().includes(filter))) : rows.slice();
    if (sortCol !== null) {
      const g = cols[sortCol].get;
      view.sort((a, b) => {
        const x = g(a), y = g(b);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * sortDir;
      });
    }
    tbody.replaceChildren(...view.slice(0, limit).map((r) => {
      const tr = el("tr", {}, cols.map((c) => el("td", {cls: c.cls || "", text: c.text ? c.text(r) : fmt(c.get(r))})));
      if (onRow) onRow(tr, r);
      return tr;
    }));
    status.textContent = "showing " + Math.min(limit, view.length) + " of " + view.length + " matching (" + rows.length + " loaded)";
  }
  input.addEventListener("input", () => { filter = input.value.trim().toLowerCase(); render(); });
  const node = el("div", {}, el("div", {cls: "toolbar"}, input, status), el("table", {}, el("thead", {}, head), tbody));
  return {node, render};
}
