"use strict";
// The fine-tune evaluation report: pooled figures and the per-image table exactly as in
// EVAL/report.json (each cell keeps the JSON value in data-value), then per image
// before | after | MSE with sliders; regions outlined (yellow: this picture's mask, cyan: before).
const RATE = new Set(["area_change", "removal_rate", "addition_rate"]);
function show(field, v) {
  if (typeof v !== "number") return v === null || v === undefined ? "n/a" : String(v);
  if (RATE.has(field)) return pct(v, 2);
  if (field.startsWith("psnr")) return v.toFixed(2) + " dB";
  return fmt(v);
}
function cell(field, v, cls) {
  return el("td", {cls: cls || "", "data-field": field, "data-value": v === null || v === undefined ? "null" : String(v), text: show(field, v)});
}

document.getElementById("title").textContent = "DeSRA fine-tune evaluation: " + DATA.eval;
document.getElementById("subtitle").textContent = "generated " + DATA.generated + " · yellow outline: regions detected on that picture, cyan: regions before the fine-tune";
const app = document.getElementById("app");
const P = DATA.pooled;
app.append(el("h2", {text: "Pooled"}), el("div", {cls: "stats"},
  [["images", fmt(P.images)], ["artifact area before → after", fmt(P.area_before) + " → " + fmt(P.area_after) + " px"],
   ["area change", show("area_change", P.area_change)], ["removal rate", show("removal_rate", P.removal_rate)],
   ["addition rate", show("addition_rate", P.addition_rate)], ["PSNR after vs before, outside", show("psnr_after_vs_before_outside", P.psnr_after_vs_before_outside)]]
    .map(([k, v]) => el("div", {cls: "stat"}, el("b", {text: v}), el("span", {cls: "muted", text: k})))));
app.append(el("table", {id: "pooled-table"}, el("tbody", {}, DATA.pooled_fields.map((f) =>
  el("tr", {}, el("th", {cls: "text", text: f}), cell(f, P[f]))))));

const F = DATA.image_fields;
app.append(el("h2", {text: "Per image"}), el("div", {cls: "scroll"}, el("table", {id: "image-table"},
  el("thead", {}, el("tr", {}, el("th", {cls: "text", text: "image"}), F.map((f) => el("th", {text: f.replace(/_/g, " ")})))),
  el("tbody", {}, DATA.images.map((it, i) => el("tr", {"data-key": it.key},
    el("td", {cls: "text"}, el("a", {href: "#im-" + (i + 1), text: it.key})), F.map((f) => cell(f, it.figures[f]))))))));
if (DATA.errors.length) {
  app.append(el("h2", {text: "Errors"}), el("ul", {id: "errors"}, DATA.errors.map(([k, msg]) => el("li", {cls: "warn", text: k + ": " + msg}))));
}

app.append(el("h2", {text: "Images"}));
DATA.images.forEach((it, i) => {
  const p = it.pics, f = it.figures;
  app.append(el("section", {cls: "region eval-image", id: "im-" + (i + 1)},
    el("h3", {cls: "name", text: it.key}),
    el("p", {cls: "muted", text: "area " + fmt(f.area_before) + " → " + fmt(f.area_after) + " px, regions " + fmt(f.regions_before) +
      ", removed " + fmt(f.regions_removed) + ", new " + fmt(f.new_regions) + ", PSNR after vs before outside " + show("psnr", f.psnr_after_vs_before_outside)}),
    it.missing.length ? el("p", {cls: "warn missing", text: "missing: " + it.missing.join("; ")}) : null,
    el("div", {cls: "pair"},
      p.before && p.after ? el("div", {}, el("h3", {text: "before ↔ after the fine-tune"}), compare(p.before, p.after, "before", "after", {"data-kind": "before-after"})) : null,
      p.after && p.mse ? el("div", {}, el("h3", {text: "after ↔ MSE-SR"}), compare(p.after, p.mse, "after", "MSE-SR", {"data-kind": "after-mse"})) : null)));
});
