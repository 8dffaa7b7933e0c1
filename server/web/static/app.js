// Herald dashboard: times in the viewer's zone, keyboard navigation.
(function () {
  "use strict";
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.local) return;
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.title = el.textContent;
      el.textContent = d.toLocaleString(undefined, { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
      el.dataset.local = "1";
    });
  }
  var pages = { o: "/", d: "/dlq", g: "/groups", s: "/schemas", a: "/sagas", p: "/projections", t: "/topology" };
  var pendingG = false, row = -1;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("table.rows tbody tr")); }
  function focusRow(i) {
    var rs = rows();
    if (!rs.length) return;
    row = Math.max(0, Math.min(rs.length - 1, i));
    rs.forEach(function (r) { r.classList.remove("focus"); });
    rs[row].classList.add("focus");
    rs[row].scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) {
      if (e.key === "Escape") t.blur();
      return;
    }
    if (pendingG) {
      pendingG = false;
      if (pages[e.key]) { window.location.href = pages[e.key]; e.preventDefault(); }
      return;
    }
    switch (e.key) {
      case "g": pendingG = true; setTimeout(function () { pendingG = false; }, 1500); break;
      case "/": var s = document.querySelector("[data-search]"); if (s) { s.focus(); e.preventDefault(); } break;
      case "j": focusRow(row + 1); break;
      case "k": focusRow(row - 1); break;
      case "Enter":
        var rs = rows();
        if (row >= 0 && rs[row]) { var a = rs[row].querySelector("a"); if (a) { a.click(); e.preventDefault(); } }
        break;
      case "?": var d = document.getElementById("keys-help"); if (d && d.showModal && !d.open) d.showModal(); break;
    }
  });
  document.addEventListener("DOMContentLoaded", function () { localTimes(document); });
  document.addEventListener("htmx:afterSettle", function (e) { localTimes(e.target); row = -1; });
  document.addEventListener("change", function (e) {
    var all = e.target;
    if (all && all.matches && all.matches("input[data-select-all]")) {
      document.querySelectorAll("input[name=id]").forEach(function (c) { c.checked = all.checked; });
    }
  });
})();
