// The lab page: kept up to date every two seconds from /ui/state; changes go through the same v4
// API the SDKs call (with the session cookie and the X-Labkit-UI header a cross-site form cannot send).
"use strict";
const canChange = document.body.dataset.canChange === "yes";
const api = "/api/vmm/v4.0/ahv/config/vms";

function text(value) { const span = document.createElement("span"); span.textContent = value; return span.innerHTML; }

async function call(method, url, body, etag) {
  const headers = {"Content-Type": "application/json", "X-Labkit-UI": "1"};
  if (etag) headers["If-Match"] = etag;
  const response = await fetch(url, {method, headers, body: body ? JSON.stringify(body) : undefined, credentials: "same-origin"});
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.data && data.data.error && data.data.error[0] ? data.data.error[0].message : response.statusText;
    throw new Error(error);
  }
  return {data, etag: response.headers.get("ETag")};
}

async function vmAction(uuid, action) {
  say(`${action}...`);
  try {
    const current = await call("GET", `${api}/${uuid}`);
    if (action === "delete") await call("DELETE", `${api}/${uuid}`, null, current.etag);
    else await call("POST", `${api}/${uuid}/$actions/${action}`, null, current.etag);
    say(`${action}: a task; the table follows it`);
    setTimeout(() => say(""), 5000);
  } catch (error) { say(error.message); }
}

function say(message) { document.getElementById("message").textContent = message; }

function render(state) {
  document.querySelector("#vms tbody").innerHTML = state.vms.map(v => {
    const buttons = canChange ? (v.power === "on"
      ? `<button data-act="power-off" data-uuid="${v.uuid}">Power off</button>`
      : `<button data-act="power-on" data-uuid="${v.uuid}">Power on</button> <button data-act="delete" data-uuid="${v.uuid}">Delete</button>`) : "";
    return `<tr data-name="${text(v.name)}"><td>${text(v.name)}</td><td class="power-${v.power}">${v.power}</td><td>${text(v.host)}</td>` +
      `<td>${v.nics.map(n => text(n.network || "")).join(", ")}</td><td class="ip">${v.nics.map(n => text(n.ip)).join(", ")}</td>` +
      `<td>${v.memory} MiB</td><td>${buttons}</td></tr>`;
  }).join("");
  document.querySelector("#networks tbody").innerHTML = state.networks.map(n =>
    `<tr><td>${text(n.name)}</td><td>${n.vlan}</td><td>${text(n.subnet)}</td><td>${n.pools.map(text).join(", ")}</td>` +
    `<td>${n.managed ? n.free : ""}</td><td>${n.leases.map(l => `${text(l.ip)} ${text(l.host)}`).join("<br>")}</td></tr>`).join("");
  document.querySelector("#hosts tbody").innerHTML = state.hosts.map(h =>
    `<tr><td>${text(h.name)}</td><td>${text(h.ip)}</td><td>${text(h.cvm_ip)}</td><td>${h.vms}</td></tr>`).join("");
  document.querySelector("#tasks tbody").innerHTML = state.tasks.map(t =>
    `<tr><td>${t.when}</td><td>${text(t.operation)}</td><td>${text(t.entities)}</td>` +
    `<td class="task-${t.status}" title="${text(t.error)}">${t.status}</td><td>${text(t.user)} (${text(t.client)})</td></tr>`).join("");
  const signature = JSON.stringify(state.vms.map(v => [v.name, v.power]).concat(state.networks.map(n => n.name)));
  if (signature !== render.signature) {  // the lab changed: draw it again
    render.signature = signature;
    document.getElementById("diagram").src = `/ui/diagram.svg?${Date.now()}`;
  }
}

async function refresh() {
  try {
    const response = await fetch("/ui/state", {credentials: "same-origin"});
    if (response.status === 401) { location.href = "/login"; return; }
    render(await response.json());
  } catch (error) { /* the server restarts: try again */ }
}

document.addEventListener("click", event => {
  const button = event.target.closest("button[data-act]");
  if (button) vmAction(button.dataset.uuid, button.dataset.act);
});

const form = document.getElementById("create-vm");
if (form) form.addEventListener("submit", async event => {
  event.preventDefault();
  const name = document.getElementById("vm-name").value;
  const body = {name, numSockets: 1, numCoresPerSocket: 1,
    memorySizeBytes: Number(document.getElementById("vm-memory").value) * 1048576,
    nics: [{networkInfo: {nicType: "NORMAL_NIC", vlanMode: "ACCESS",
      subnet: {extId: document.getElementById("vm-network").value}, ipv4Config: {shouldAssignIp: true}}}]};
  say(`creating ${name}...`);
  try { await call("POST", api, body); say(`${name}: created (a task); power it on when it appears`); form.reset(); }
  catch (error) { say(error.message); }
});

refresh();
setInterval(refresh, 2000);
