// The clawrun dashboard: a client of the /v1 API like any other. The token
// lives in this tab's sessionStorage; data is written to the page with
// textContent only.
"use strict";

const TOKEN = "clawrun.token";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "onclick") node.addEventListener("click", value);
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function status(text, error) {
  const s = $("status");
  s.textContent = text || "";
  s.className = error ? "error" : "";
}

async function api(method, path, body, contentType) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN) };
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    headers["Content-Type"] = contentType || "application/octet-stream";
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  if (response.status === 401) {
    signOut("Your token was refused (revoked or wrong): sign in again.");
    throw new Error("unauthorized");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error((data && data.error && data.error.message) || response.statusText);
  }
  return data;
}

// Runs an action, showing its error instead of losing it.
async function attempt(action, done) {
  try {
    const result = await action();
    if (done) status(done);
    return result;
  } catch (e) {
    if (e.message !== "unauthorized") status(e.message, true);
    return undefined;
  }
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function cost(micros) {
  return micros === null || micros === undefined ? "-" : "$" + (micros / 1e6).toFixed(6);
}

// ---- sign in -------------------------------------------------------------

async function signIn(token) {
  sessionStorage.setItem(TOKEN, token);
  const org = await attempt(() => api("GET", "/v1/org"));
  if (!org) {
    sessionStorage.removeItem(TOKEN);
    return;
  }
  $("org-name").textContent = org.name;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  status("");
  await refreshAll();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("org-name").textContent = "";
  const form = $("sign-in-form");
  form.reset();
  let note = $("sign-in-note");
  if (!note) {
    note = el("p", { id: "sign-in-note", class: "error" });
    form.after(note);
  }
  note.textContent = message || "";
}

// ---- claws ---------------------------------------------------------------

let keysCache = [];
const clawNames = {};

async function refreshClaws() {
  const claws = await attempt(() => api("GET", "/v1/claws"));
  if (!claws) return;
  for (const c of claws) clawNames[c.id] = c.name;
  const keyNames = keysCache.filter((k) => k.state === "active").map((k) => k.name);
  fill(document.querySelector("#claws-table tbody"), claws.map((c) => {
    const keySelect = el("select", { "aria-label": "key of " + c.name, class: "assign-key" },
      el("option", { value: "" }, "-"),
      ...keyNames.map((k) => el("option", { value: k, ...(k === c.key ? { selected: "" } : {}) }, k)));
    const model = el("input", { value: c.model || "", placeholder: "model", "aria-label": "model of " + c.name, class: "assign-model" });
    const save = el("button", { type: "button", class: "assign", onclick: () => attempt(async () => {
      if (!keySelect.value || !model.value) throw new Error("choose a key and type a model");
      await api("PUT", "/v1/claws/" + encodeURIComponent(c.name) + "/assignment",
        { key: keySelect.value, model: model.value });
      await refreshClaws();
    }, "Assigned " + c.name + ": its next call uses the new model.") }, "Save");
    const run = el("button", { type: "button", class: "run", onclick: () => openRun(c.name) }, "Run");
    const remove = el("button", { type: "button", class: "danger", onclick: () => {
      if (!confirm("Delete claw " + c.name + "? Its usage records stay.")) return;
      attempt(async () => {
        await api("DELETE", "/v1/claws/" + encodeURIComponent(c.name));
        await refreshClaws();
      }, "Deleted " + c.name + ".");
    } }, "Delete");
    return el("tr", { "data-claw": c.name },
      el("td", {}, c.name), el("td", {}, keySelect), el("td", {}, model), el("td", {}, save),
      el("td", {}, String(c.size)), el("td", {}, c.updated_at), el("td", {}, run, " ", remove));
  }));
  for (const select of document.querySelectorAll("select[name=claw]")) {
    const first = select.options[0];
    select.replaceChildren(first, ...claws.map((c) => el("option", { value: c.name }, c.name)));
  }
}

function openRun(name) {
  $("run-panel").hidden = false;
  $("run-claw").textContent = name;
  $("run-output").textContent = "";
  $("run-usage").textContent = "";
  $("run-form").dataset.claw = name;
}

async function runClaw(event) {
  event.preventDefault();
  const form = event.target;
  const name = form.dataset.claw;
  const body = { input: form.input.value };
  if (form.conversation.value) body.conversation_id = form.conversation.value;
  $("run-output").textContent = "running…";
  const run = await attempt(() => api("POST", "/v1/claws/" + encodeURIComponent(name) + "/runs", body));
  if (!run) {
    $("run-output").textContent = "";
    return;
  }
  $("run-output").textContent = run.error === null || run.error === undefined ? run.output : "error: " + run.error;
  const input = run.usage.reduce((n, u) => n + u.input_tokens, 0);
  const output = run.usage.reduce((n, u) => n + u.output_tokens, 0);
  $("run-usage").textContent = `run ${run.run_id}, conversation ${run.conversation_id}: ` +
    `${run.usage.length} model call(s), ${input} input and ${output} output tokens`;
  form.conversation.value = run.conversation_id;
}

async function deploy(event) {
  event.preventDefault();
  const form = event.target;
  const file = form.file.files[0];
  const name = form.name.value;
  await attempt(async () => {
    await api("PUT", "/v1/claws/" + encodeURIComponent(name), file, "application/wasm");
    form.reset();
    await refreshClaws();
  }, "Deployed " + name + ". Assign it a key and model.");
}

async function refreshBudgets() {
  const budgets = await attempt(() => api("GET", "/v1/budgets"));
  if (!budgets) return;
  fill(document.querySelector("#budgets-table tbody"), budgets.map((b) => {
    const amount = b.unit === "micros" ? cost(b.amount) : b.amount + " tokens";
    const remove = el("button", { type: "button", class: "danger", onclick: () => attempt(async () => {
      await api("DELETE", "/v1/budgets/" + b.id);
      await refreshBudgets();
    }, "Removed budget #" + b.id + ".") }, "Remove");
    return el("tr", {}, el("td", {}, "#" + b.id), el("td", {}, `${b.scope} ${b.period}: ${amount}`),
      el("td", {}, b.claw_id || "-"), el("td", {}, remove));
  }));
}

async function addBudget(event) {
  event.preventDefault();
  const f = event.target;
  const body = { scope: f.scope.value, per: f.per.value };
  if (f.claw.value) body.claw = f.claw.value;
  if (f.unit.value === "usd") body.usd = Number(f.amount.value);
  else body.tokens = Math.round(Number(f.amount.value));
  await attempt(async () => {
    await api("POST", "/v1/budgets", body);
    f.reset();
    await refreshBudgets();
  }, "Budget added.");
}

// ---- keys ----------------------------------------------------------------

async function refreshKeys() {
  const keys = await attempt(() => api("GET", "/v1/keys"));
  if (!keys) return;
  keysCache = keys;
  fill(document.querySelector("#keys-table tbody"), keys.map((k) => {
    const actions = k.state === "active" ? [
      el("button", { type: "button", onclick: () => openRotate(k.name) }, "Rotate"), " ",
      el("button", { type: "button", class: "danger", onclick: () => {
        if (!confirm("Revoke key " + k.name + "? No request with it starts after this.")) return;
        attempt(async () => {
          await api("POST", "/v1/keys/" + encodeURIComponent(k.name) + "/revoke");
          await refreshKeys();
        }, "Revoked " + k.name + ".");
      } }, "Revoke"),
    ] : [];
    return el("tr", { "data-key": k.name }, el("td", {}, k.name), el("td", {}, k.provider),
      el("td", {}, k.hint), el("td", {}, String(k.version)), el("td", {}, k.state),
      el("td", {}, k.created_at), el("td", {}, ...actions));
  }));
}

async function addKey(event) {
  event.preventDefault();
  const f = event.target;
  const body = { name: f.name.value, provider: f.provider.value, secret: f.secret.value };
  if (f.base_url.value) body.base_url = f.base_url.value;
  // The key leaves the page with this request; the form forgets it at once.
  f.reset();
  await attempt(async () => {
    await api("POST", "/v1/keys", body);
    await refreshKeys();
    await refreshClaws();
  }, "Key " + body.name + " added and encrypted; it is not shown again.");
  body.secret = "";
}

function openRotate(name) {
  const f = $("rotate-form");
  f.hidden = false;
  f.dataset.key = name;
  $("rotate-name").textContent = name;
}

async function rotateKey(event) {
  event.preventDefault();
  const f = event.target;
  const body = { secret: f.secret.value };
  f.reset();
  f.hidden = true;
  await attempt(async () => {
    await api("POST", "/v1/keys/" + encodeURIComponent(f.dataset.key) + "/rotate", body);
    await refreshKeys();
  }, "Rotated " + f.dataset.key + ".");
  body.secret = "";
}

// ---- usage ---------------------------------------------------------------

function usageQuery(extra) {
  const f = $("usage-form");
  const q = new URLSearchParams(extra);
  if (f.since.value) q.set("since_ms", String(Date.now() - Number(f.since.value)));
  if (f.claw.value) q.set("claw", f.claw.value);
  return q.toString();
}

function usageTable(table, rows) {
  const head = el("tr", {}, ...["Group", "Calls", "Input", "Output", "Cache read", "Cache write", "Reasoning", "Cost (est.)"]
    .map((h) => el("th", {}, h)));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows.map((t) => el("tr", {},
    el("td", {}, t.group), el("td", {}, String(t.calls)), el("td", {}, String(t.input_tokens)),
    el("td", {}, String(t.output_tokens)), el("td", {}, String(t.cache_read_tokens)),
    el("td", {}, String(t.cache_write_tokens)), el("td", {}, String(t.reasoning_tokens)),
    el("td", {}, cost(t.cost_micros))))));
}

// Input and output tokens per hour (or day), as stacked SVG bars.
function chart(container, rows) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  const width = 720, height = 180, pad = 24;
  svg.setAttribute("viewBox", `0 0 ${width} ${height + pad}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "tokens over time");
  const max = Math.max(1, ...rows.map((r) => r.input_tokens + r.output_tokens));
  const bar = rows.length ? Math.min(48, (width - pad) / rows.length) : 0;
  rows.forEach((r, i) => {
    const x = pad + i * bar;
    const hIn = (r.input_tokens / max) * height;
    const hOut = (r.output_tokens / max) * height;
    for (const [h, y, cls] of [[hIn, height - hIn, "in"], [hOut, height - hIn - hOut, "out"]]) {
      const rect = document.createElementNS(NS, "rect");
      rect.setAttribute("x", x + 1);
      rect.setAttribute("y", y);
      rect.setAttribute("width", Math.max(1, bar - 2));
      rect.setAttribute("height", h);
      rect.setAttribute("class", cls);
      const title = document.createElementNS(NS, "title");
      title.textContent = `${r.group}: ${r.input_tokens} input, ${r.output_tokens} output tokens`;
      rect.append(title);
      svg.append(rect);
    }
  });
  const label = document.createElementNS(NS, "text");
  label.setAttribute("x", pad);
  label.setAttribute("y", height + pad - 6);
  label.textContent = rows.length
    ? `${rows[0].group} … ${rows[rows.length - 1].group} (max ${max} tokens per bar; dark: input, light: output)`
    : "no usage in this window";
  svg.append(label);
  container.replaceChildren(svg);
}

async function refreshUsage() {
  const since = $("usage-form").since.value;
  const by = since && Number(since) <= 604800000 ? "hour" : "day";
  const [time, claw, conversation, tool, records] = await Promise.all([
    attempt(() => api("GET", "/v1/usage?" + usageQuery({ by }))),
    attempt(() => api("GET", "/v1/usage?" + usageQuery({ by: "claw" }))),
    attempt(() => api("GET", "/v1/usage?" + usageQuery({ by: "conversation" }))),
    attempt(() => api("GET", "/v1/usage?" + usageQuery({ by: "tool" }))),
    attempt(() => api("GET", "/v1/usage/records?" + usageQuery({ limit: "50" }))),
  ]);
  if (time) chart($("usage-chart"), time);
  if (claw) usageTable($("usage-claw"), claw);
  if (conversation) usageTable($("usage-conversation"), conversation);
  if (tool) usageTable($("usage-tool"), tool);
  if (records) {
    const head = el("tr", {}, ...["Time", "Claw", "Conversation", "Tool", "Model", "Input", "Output", "Source", "Outcome", "Cost"]
      .map((h) => el("th", {}, h)));
    $("usage-records").replaceChildren(el("thead", {}, head), el("tbody", {}, ...records.reverse().map((u) => el("tr", {},
      el("td", {}, new Date(u.at_ms).toISOString()), el("td", {}, clawNames[u.claw_id] || u.claw_id), el("td", {}, u.conversation_id),
      el("td", {}, u.tool_name || "-"), el("td", {}, u.model_returned || u.model_requested),
      el("td", {}, String(u.input_tokens)), el("td", {}, String(u.output_tokens)),
      el("td", {}, u.source), el("td", {}, u.outcome), el("td", {}, cost(u.cost_micros))))));
  }
}

// ---- audit ---------------------------------------------------------------

async function refreshAudit() {
  const records = await attempt(() => api("GET", "/v1/audit"));
  if (!records) return;
  fill(document.querySelector("#audit-table tbody"), records.slice().reverse().map((r) => el("tr", {},
    el("td", {}, new Date(r.at_ms).toISOString()), el("td", {}, r.actor), el("td", {}, r.action),
    el("td", {}, r.key_id || "-"), el("td", {}, r.key_version === null ? "-" : String(r.key_version)),
    el("td", {}, r.claw_id || "-"), el("td", {}, r.subject || "-"), el("td", {}, r.outcome))));
}

// ---- wiring --------------------------------------------------------------

async function refreshAll() {
  await refreshKeys();
  await Promise.all([refreshClaws(), refreshBudgets()]);
}

const REFRESH = { claws: refreshAll, keys: refreshKeys, usage: refreshUsage, audit: refreshAudit };

function showTab(name) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== "tab-" + name;
  status("");
  REFRESH[name]();
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    e.target.reset();
    signIn(token);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("deploy-form").addEventListener("submit", deploy);
  $("run-form").addEventListener("submit", runClaw);
  $("budget-form").addEventListener("submit", addBudget);
  $("key-form").addEventListener("submit", addKey);
  $("rotate-form").addEventListener("submit", rotateKey);
  $("rotate-cancel").addEventListener("click", () => { $("rotate-form").reset(); $("rotate-form").hidden = true; });
  $("usage-form").addEventListener("submit", (e) => { e.preventDefault(); refreshUsage(); });
  const saved = sessionStorage.getItem(TOKEN);
  if (saved) signIn(saved);
});
