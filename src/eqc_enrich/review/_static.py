"""The page's stylesheet and its small script (no build step): served from /static by the app."""

from __future__ import annotations

__all__ = ["CSS", "JS"]

CSS = """
:root { font-family: system-ui, "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", sans-serif; }
body { font-size: 14px; }
[lang="zh-CN"] {
  font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif;
}
body { margin: 0; color: #1d2430; background: #f6f7f9; }
header { padding: 10px 16px; background: #fff; border-bottom: 1px solid #d9dde3; }
header h1 { font-size: 18px; margin: 0 12px 0 0; display: inline-block; }
.left { display: inline-block; margin: 0 12px; }
.counts { display: inline-block; }
.count { margin-right: 8px; padding: 2px 6px; border-radius: 4px; background: #eef1f5; color: #1d2430; }
.count { text-decoration: none; }
.filter { display: inline-block; margin-left: 8px; }
.keys { list-style: none; padding: 0; margin: 6px 0 0; color: #4a5567; font-size: 12px; }
.keys li { display: inline-block; margin-right: 12px; }
kbd { border: 1px solid #b8bfca; border-bottom-width: 2px; border-radius: 3px; padding: 0 4px; background: #fff; }
.layout { display: grid; grid-template-columns: minmax(320px, 38%) 1fr; gap: 12px; padding: 12px 16px; }
.queue, .detail { background: #fff; border: 1px solid #d9dde3; border-radius: 6px; padding: 8px; overflow: auto; }
.queue { max-height: calc(100vh - 170px); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #eef0f3; vertical-align: top; }
td.rows, td.rank { text-align: right; font-variant-numeric: tabular-nums; }
tr.chosen { background: #fff4cf; }
tr.name a { color: #12407a; text-decoration: none; }
.tag { font-size: 11px; padding: 1px 5px; border-radius: 3px; background: #eef1f5; white-space: nowrap; }
.tag.temporary { background: #fde2e1; }
.tag.low_confidence { background: #fff0c2; }
.tag.several { background: #dcecff; }
.tag.local, tr.candidate.local td.cid { background: #e3f5e1; }
.local-match { display: block; font-size: 12px; color: #2d6a2e; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
.facts dt { color: #4a5567; }
.scroll { overflow-x: auto; }
.sample { width: auto; font-size: 12px; }
.sample th, .sample td { white-space: nowrap; }
.detail h2 { margin: 4px 0 8px; font-size: 20px; }
.detail h3 { margin: 14px 0 6px; font-size: 15px; }
.notice { background: #e6f4ea; padding: 6px 8px; border-radius: 4px; }
.answer { background: #eef1f5; padding: 6px 8px; border-radius: 4px; }
.slot { margin-left: 10px; color: #4a5567; }
.decide form, .search { display: inline-block; margin-right: 10px; }
button { cursor: pointer; }
footer { padding: 0 16px 16px; }
footer ul { list-style: none; padding: 0; }
.decision.undone { color: #8a93a3; text-decoration: line-through; }
.decision form { display: inline; }
.empty { color: #8a93a3; }
.ctl {
  font: 10px/1 ui-monospace, monospace; color: #a40000; border: 1px solid #a40000; border-radius: 2px;
  padding: 0 2px; margin: 0 1px;
}
.error { padding: 40px; }
"""

JS = """
(function () {
  "use strict";
  function typing(target) {
    return target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable);
  }
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr.name")); }
  function go(link) { if (link) { window.location.href = link.getAttribute("href"); } }
  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var at = all.findIndex(function (row) { return row.classList.contains("chosen"); });
    var to = at + step;
    if (at < 0) { to = 0; }
    if (to >= all.length) { return go(document.getElementById("next-page")); }
    if (to < 0) { return go(document.getElementById("prev-page")); }
    go(all[to].querySelector("a"));
  }
  function chooseCandidate(n) {
    var all = document.querySelectorAll("tr.candidate");
    if (n < 1 || n > all.length) { return; }
    all.forEach(function (row, i) { row.classList.toggle("chosen", i === n - 1); });
  }
  function submit(form) { if (form) { form.requestSubmit ? form.requestSubmit() : form.submit(); } }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (typing(event.target)) {
      if (event.key === "Escape") { event.target.blur(); }
      return;
    }
    var key = event.key;
    if (key === "j" || key === "ArrowDown") { move(1); }
    else if (key === "k" || key === "ArrowUp") { move(-1); }
    else if (/^[1-9]$/.test(key)) { chooseCandidate(parseInt(key, 10)); }
    else if (key === "a") { var chosen = document.querySelector("tr.candidate.chosen form.accept"); submit(chosen); }
    else if (key === "n") { submit(document.getElementById("not-company-form")); }
    else if (key === "s") { submit(document.getElementById("skip-form")); }
    else if (key === "u") { submit(document.getElementById("undo-form")); }
    else if (key === "i") { var id = document.getElementById("company-id"); if (id) { id.focus(); } }
    else if (key === "/") {
      var q = document.getElementById("query") || document.getElementById("filter");
      if (q) { q.focus(); q.select(); }
    }
    else { return; }
    event.preventDefault();
  });
  var chosenRow = document.querySelector("tr.name.chosen");
  if (chosenRow) { chosenRow.scrollIntoView({block: "nearest"}); }
  var slot = document.getElementById("slot");
  if (slot) {
    var left = parseFloat(slot.getAttribute("data-seconds")) || 0;
    var tick = function () {
      slot.textContent = left >= 0.5 ? "next EQC slot in " + Math.round(left) + " s" : "an EQC slot is free now";
      left = Math.max(0, left - 1);
    };
    tick();
    setInterval(tick, 1000);
  }
})();
"""
