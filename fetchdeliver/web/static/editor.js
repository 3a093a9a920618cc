// The Sieve editor: line numbers, errors at line:column as you type (the server's compiler), preview.
(function () {
  "use strict";
  var area = document.getElementById("script");
  if (!area) return;
  var gutter = document.getElementById("gutter");
  var status = document.getElementById("status");
  var list = document.getElementById("errors");
  var csrf = document.getElementById("csrf").value;
  var bad = {};
  var timer = null;
  var seq = 0;

  function drawGutter() {
    var n = area.value.split("\n").length;
    var out = [];
    for (var i = 1; i <= n; i++) out.push(bad[i] ? "\u25cf " + i : String(i));
    gutter.textContent = out.join("\n");
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body)
    }).then(function (r) {
      if (!r.ok) throw new Error("the server answered " + r.status);
      return r.json();
    });
  }

  function showErrors(errors) {
    bad = {};
    list.textContent = "";
    errors.forEach(function (e) {
      if (e.line) bad[e.line] = true;
      var li = document.createElement("li");
      li.className = "compile-error";
      li.dataset.line = e.line;
      li.dataset.column = e.column;
      li.textContent = e.text;
      li.addEventListener("click", function () { jump(e.line, e.column); });
      list.appendChild(li);
    });
    drawGutter();
  }

  function jump(line, column) {
    var lines = area.value.split("\n");
    var pos = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
    pos += Math.max(0, column - 1);
    area.focus();
    area.setSelectionRange(pos, pos);
  }

  function check() {
    var mine = ++seq;
    status.textContent = "Checking\u2026";
    post("/rules/check", {script: area.value}).then(function (res) {
      if (mine !== seq) return;
      showErrors(res.errors);
      status.textContent = res.ok ? "No errors." : res.errors.length + " error" + (res.errors.length === 1 ? "" : "s") + ".";
      status.className = "status " + (res.ok ? "ok" : "bad");
    }).catch(function (err) { status.textContent = "Could not check: " + err.message; });
  }

  area.addEventListener("input", function () {
    drawGutter();
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
  area.addEventListener("scroll", function () { gutter.scrollTop = area.scrollTop; });
  area.addEventListener("keydown", function (ev) {
    if (ev.key === "Tab") {
      ev.preventDefault();
      var s = area.selectionStart;
      area.setRangeText("    ", s, area.selectionEnd, "end");
      area.dispatchEvent(new Event("input"));
    }
  });

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  document.getElementById("preview").addEventListener("click", function () {
    var box = document.getElementById("preview-result");
    box.textContent = "Running the script on your last 50 messages\u2026";
    post("/rules/preview", {script: area.value}).then(function (res) {
      box.textContent = "";
      if (res.errors.length) { showErrors(res.errors); box.textContent = "Fix the errors first."; return; }
      var h = document.createElement("h2");
      h.textContent = "Preview: " + res.rows.length + " messages, " + (res.changed || 0) + " would go elsewhere";
      box.appendChild(h);
      if (res.note) { var p = document.createElement("p"); p.textContent = res.note; box.appendChild(p); }
      var table = document.createElement("table");
      table.id = "preview-table";
      var head = document.createElement("tr");
      ["From", "Subject", "Now in", "Current script", "This script"].forEach(function (t) {
        var th = document.createElement("th"); th.textContent = t; head.appendChild(th);
      });
      table.appendChild(head);
      res.rows.forEach(function (r) {
        var tr = document.createElement("tr");
        tr.className = r.changed ? "changed" : "";
        cell(tr, r.from); cell(tr, r.subject); cell(tr, r.folder);
        cell(tr, r.current.join("; ")); cell(tr, r.proposed.join("; "), r.changed ? "new" : "");
        table.appendChild(tr);
      });
      box.appendChild(table);
    }).catch(function (err) { box.textContent = "Preview failed: " + err.message; });
  });

  drawGutter();
  check();
})();
