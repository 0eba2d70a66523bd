// voxseg report: sortable and filterable tables (plain JavaScript, no network).
(function () {
  "use strict";

  function cellKey(row, index) {
    var cell = row.cells[index];
    return cell ? cell.getAttribute("data-sort") || cell.textContent : "";
  }

  function compare(a, b) {
    // Empty keys (undefined values) sort last in either direction; numbers numerically.
    if (a === "" || b === "") return a === b ? 0 : a === "" ? 1 : -1;
    var x = Number(a), y = Number(b);
    if (!isNaN(x) && !isNaN(y)) return x < y ? -1 : x > y ? 1 : 0;
    return a.localeCompare(b, undefined, { numeric: true });
  }

  function sortTable(table, index, th) {
    var body = table.tBodies[0];
    var descending = th.getAttribute("aria-sort") === "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = cellKey(r1, index), b = cellKey(r2, index);
      if (a === "" || b === "") return compare(a, b);
      return descending ? compare(b, a) : compare(a, b);
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    rows.forEach(function (r) { body.appendChild(r); });
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", function () { sortTable(table, index, th); });
    });
  });

  document.querySelectorAll("input.filter").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    if (!table) return;
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.hidden = q !== "" && row.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  });
})();
