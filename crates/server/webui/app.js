// cria's chat page: talks to this server's /v1/chat/completions with
// streaming, keeps conversations in localStorage, and never puts model or
// user text into the page as HTML without escaping it (markdown.js).
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "cria.conversations";
const SETTINGS = "cria.settings";
const KEY = "cria.apiKey";
const PARAMS = ["temperature", "top_p", "top_k", "min_p", "max_tokens", "seed"];

let conversations = load(STORE, []);
let current = null; // the conversation shown
let controller = null; // AbortController of the answer being streamed
let editing = null; // index of the user message being edited

function load(key, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    return v ?? fallback;
  } catch {
    return fallback;
  }
}

function save() {
  localStorage.setItem(STORE, JSON.stringify(conversations));
}

function saveSettings() {
  const s = { system: $("system").value };
  for (const p of PARAMS) s[p] = $(p).value;
  localStorage.setItem(SETTINGS, JSON.stringify(s));
}

function restoreSettings() {
  const s = load(SETTINGS, {});
  if (typeof s.system === "string") $("system").value = s.system;
  for (const p of PARAMS) if (typeof s[p] === "string") $(p).value = s[p];
}

function newConversation() {
  const c = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: "New chat", messages: [] };
  conversations.unshift(c);
  current = c;
  save();
  renderList();
  renderMessages();
}

function renderList() {
  const ul = $("conversations");
  ul.replaceChildren();
  for (const c of conversations) {
    const li = document.createElement("li");
    li.className = c === current ? "active" : "";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "conv";
    open.textContent = c.title; // text, never HTML
    open.onclick = () => {
      if (controller) return;
      current = c;
      editing = null;
      renderList();
      renderMessages();
      document.body.classList.remove("side-open");
    };
    const del = document.createElement("button");
    del.type = "button";
    del.className = "icon del";
    del.setAttribute("aria-label", "Delete this conversation");
    del.textContent = "\u00d7";
    del.onclick = () => {
      if (controller && c === current) return;
      conversations = conversations.filter((x) => x !== c);
      if (c === current) current = conversations[0] || null;
      save();
      if (!current) newConversation();
      renderList();
      renderMessages();
    };
    li.append(open, del);
    ul.append(li);
  }
}

function messageNode(m, i) {
  const div = document.createElement("div");
  div.className = "msg " + m.role;
  div.dataset.index = i;
  const body = document.createElement("div");
  body.className = "body";
  if (m.role === "assistant") body.innerHTML = Markdown.render(m.content); // escaped inside
  else body.textContent = m.content;
  div.append(body);
  const foot = document.createElement("div");
  foot.className = "foot";
  if (m.error) {
    const e = document.createElement("span");
    e.className = "error";
    e.textContent = m.error;
    foot.append(e);
  }
  if (m.stats) {
    const s = document.createElement("span");
    s.className = "stats";
    s.textContent = m.stats;
    foot.append(s);
  }
  const last = i === current.messages.length - 1;
  if (m.role === "user") {
    foot.append(action("Edit", () => startEdit(i)));
  } else if (last) {
    foot.append(action("Regenerate", regenerate));
  }
  div.append(foot);
  return div;
}

function action(label, fn) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "link action";
  b.textContent = label;
  b.onclick = () => {
    if (!controller) fn();
  };
  return b;
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  if (!current) return;
  current.messages.forEach((m, i) => box.append(messageNode(m, i)));
  box.scrollTop = box.scrollHeight;
}

function startEdit(i) {
  editing = i;
  $("input").value = current.messages[i].content;
  $("editing").hidden = false;
  $("input").focus();
}

function cancelEdit() {
  editing = null;
  $("editing").hidden = true;
  $("input").value = "";
}

function regenerate() {
  const msgs = current.messages;
  if (msgs.length && msgs[msgs.length - 1].role === "assistant") msgs.pop();
  if (!msgs.length) return;
  save();
  renderMessages();
  answer();
}

function send(text) {
  if (!current) newConversation();
  if (editing !== null) {
    current.messages.length = editing; // the edited message and all after it go
    cancelEdit();
  }
  current.messages.push({ role: "user", content: text });
  if (current.title === "New chat") current.title = text.slice(0, 40);
  save();
  renderList();
  renderMessages();
  answer();
}

function requestBody() {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const m of current.messages) messages.push({ role: m.role, content: m.content });
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  for (const p of PARAMS) {
    const v = $(p).value.trim();
    if (v !== "") body[p] = Number(v);
  }
  return body;
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("status").textContent = busy ? "answering..." : "";
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem(KEY);
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

// Asks for the API key once; resolves true if one was given.
function askKey() {
  return new Promise((resolve) => {
    const dlg = $("key-dialog");
    $("key-input").value = "";
    $("key-cancel").onclick = () => {
      dlg.close();
      resolve(false);
    };
    $("key-form").onsubmit = (e) => {
      e.preventDefault();
      const k = $("key-input").value.trim();
      dlg.close();
      if (k) localStorage.setItem(KEY, k);
      resolve(Boolean(k));
    };
    dlg.showModal();
  });
}

async function post(path, body, signal) {
  for (;;) {
    const r = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
    if (r.status === 401) {
      localStorage.removeItem(KEY);
      if (await askKey()) {
        loadModel();
        continue;
      }
    }
    return r;
  }
}

async function answer() {
  const conv = current;
  const m = { role: "assistant", content: "" };
  conv.messages.push(m);
  renderMessages();
  const node = $("messages").lastElementChild;
  const body = node.querySelector(".body");
  controller = new AbortController();
  setBusy(true);
  const t0 = performance.now();
  let first = null;
  let tokens = 0;
  let usage = null;
  try {
    const r = await post("/v1/chat/completions", requestBody(), controller.signal);
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try {
        msg = (await r.json()).error.message;
      } catch {}
      throw new Error(msg);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const j = JSON.parse(data);
          if (j.error) throw new Error(j.error.message);
          if (j.usage) usage = j.usage;
          const delta = j.choices && j.choices[0] && j.choices[0].delta;
          if (delta && delta.content) {
            if (first === null) first = performance.now();
            tokens++;
            m.content += delta.content;
            body.innerHTML = Markdown.render(m.content); // escaped inside
            $("messages").scrollTop = $("messages").scrollHeight;
          }
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") m.error = String(e.message || e);
    else m.error = "stopped";
  } finally {
    const n = usage ? usage.completion_tokens : tokens;
    if (first !== null && n > 1) {
      const secs = (performance.now() - first) / 1000;
      m.stats = `${n} tokens, ${(secs > 0 ? (n - 1) / secs : 0).toFixed(1)} tokens/s, first after ${((first - t0) / 1000).toFixed(2)} s`;
    }
    controller = null;
    setBusy(false);
    save();
    if (conv === current) renderMessages();
  }
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    if (r.status === 401) return; // asked for when a message is sent
    const j = await r.json();
    if (j.data && j.data[0]) $("model-name").textContent = j.data[0].id;
  } catch {}
}

function init() {
  restoreSettings();
  for (const id of ["system", ...PARAMS]) $(id).addEventListener("change", saveSettings);
  current = conversations[0] || null;
  if (!current) newConversation();
  renderList();
  renderMessages();
  $("new-chat").onclick = () => {
    if (!controller) newConversation();
  };
  $("composer").onsubmit = (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || controller) return;
    $("input").value = "";
    send(text);
  };
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").onclick = () => controller && controller.abort();
  $("cancel-edit").onclick = cancelEdit;
  $("forget-key").onclick = () => localStorage.removeItem(KEY);
  $("open-side").onclick = () => document.body.classList.add("side-open");
  $("close-side").onclick = () => document.body.classList.remove("side-open");
  loadModel();
}

init();
