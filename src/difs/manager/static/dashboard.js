// The dashboard: reads the API with the admin token held in sessionStorage; text only (no innerHTML).
"use strict";
const $ = (id) => document.getElementById(id);
async function api(path) {
  const r = await fetch("/api/v1" + path, { headers: { Authorization: "Bearer " + sessionStorage.getItem("difs-token") } });
  if (!r.ok) { const p = await r.json().catch(() => ({})); throw new Error(p.detail || r.statusText); }
  return r.json();
}
function fill(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells) { const td = document.createElement("td"); td.textContent = text ?? ""; if (cls) td.className = cls; tr.append(td); }
    return tr;
  }));
}
async function refresh() {
  try {
    const [apps, nodes, events] = await Promise.all([api("/apps"), api("/nodes"), api("/events?limit=1000")]);
    fill("apps", apps.map((a) => [[a.name], [a.policy ? (a.policy.source || "inline") + ": " + a.policy.summary.join(", ") : "none"],
      [String(a.policy ? a.policy.version : "")], [a.volumes.map((v) => v.controller + "/" + v.container + " LUN " + v.lun).join("; ")],
      [a.binding ? a.binding.host : ""], [a.compliance.state, a.compliance.state]]));
    fill("nodes", nodes.map((n) => [[n.name], [n.kind], [n.state, n.state], [n.lease_expires_at || ""]]));
    fill("events", events.slice(-15).reverse().map((e) => [[e.at], [e.kind], [e.message]]));
    $("status").textContent = "Updated " + new Date().toLocaleTimeString();
  } catch (e) { $("status").textContent = "Cannot read the API: " + e.message; }
}
$("login").addEventListener("submit", (ev) => { ev.preventDefault(); sessionStorage.setItem("difs-token", $("token").value); refresh(); });
if (sessionStorage.getItem("difs-token")) refresh();
setInterval(() => { if (sessionStorage.getItem("difs-token")) refresh(); }, 5000);
