// Tollgate console: the live request tail (server-sent events), copying a new key, and asking
// before a delete.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      navigator.clipboard.writeText(text).then(() => { button.textContent = "Copied"; });
    });
  }

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  const table = document.querySelector("table[data-tail]");
  if (!table) return;
  const rows = document.getElementById("tail-rows");
  // Team names from the filter's options: the events carry ids.
  const teams = new Map([...document.querySelectorAll("#team option")].map((o) => [o.value, o.text]));
  const source = new EventSource(table.dataset.tail);
  source.addEventListener("request", (message) => {
    const r = JSON.parse(message.data);
    const row = document.createElement("tr");
    row.dataset.requestId = r.request_id;
    const cells = [
      r.occurred_at, r.error_code ? `${r.status} ${r.error_code}` : String(r.status), r.model,
      teams.get(r.team_id) || r.team_id, r.key_id, `${r.input_tokens} / ${r.output_tokens}`, r.cost_usd.toFixed(6),
      String(r.latency_ms), r.request_id,
    ];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    rows.prepend(row);
    while (rows.children.length > 500) rows.lastElementChild.remove();
  });
});
