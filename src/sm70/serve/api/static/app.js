// The clinicians' chat page: plain JS, no build step. Model output is only ever assigned with
// textContent, never innerHTML, so a reply cannot inject markup or script into the page.
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];
let model = null;
let controller = null;

function key() { return sessionStorage.getItem("sm70-key") || ""; }
function headers() {
  const h = { "Content-Type": "application/json" };
  if (key()) h.Authorization = "Bearer " + key();
  return h;
}

async function errorText(res) {
  try { const body = await res.json(); return body.error ? body.error.message : res.statusText; }
  catch { return res.status + " " + res.statusText; }
}

function askForKey(message) {
  $("chat").hidden = true;
  $("key-form").hidden = false;
  $("key-error").hidden = !message;
  $("key-error").textContent = message || "";
  $("key").focus();
}

async function connect() {
  const res = await fetch("/v1/models", { headers: headers() });
  if (res.status === 401) return askForKey(key() ? "That key was not accepted." : "");
  if (!res.ok) return askForKey(await errorText(res));
  model = (await res.json()).data[0].id;
  $("model").textContent = model;
  $("key-form").hidden = true;
  $("chat").hidden = false;
  $("prompt").focus();
}

function bubble(role, text) {
  const li = document.createElement("li");
  li.className = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : role === "assistant" ? "SM70" : "Error";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return body;
}

// The sources of a grounded answer (a server with rag=), under it and numbered as the answer cites
// them: document, title, location and score, the passage folded in a <details>. Text only, as above.
function citations(li, list) {
  const box = document.createElement("ol");
  box.className = "citations";
  for (const c of list) {
    const item = document.createElement("li");
    const head = document.createElement("div");
    const parts = [["n", "[" + c.n + "]"], ["document", c.document], ["title", c.title],
                   ["location", c.location], ["score", "score " + Number(c.score).toFixed(2)]];
    for (const [name, text] of parts) {
      if (!text) continue;
      const span = document.createElement("span");
      span.className = name;
      span.textContent = text;
      head.append(span);
    }
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "passage";
    const passage = document.createElement("p");
    passage.className = "snippet";
    passage.textContent = c.snippet;
    details.append(summary, passage);
    item.append(head, details);
    box.append(item);
  }
  li.append(box);
}

function busy(on, status) {
  $("send").disabled = on;
  $("stop").hidden = !on;
  $("status").textContent = status || "";
}

// Reads an SSE body chunk by chunk and calls onEvent with each parsed `data:` object.
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  controller = new AbortController();
  busy(true, "thinking…");
  let reply = "";
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({ model, messages: history, stream: true, max_tokens: 256 }),
    });
    if (res.status === 401) { history.pop(); return askForKey("The key was not accepted (revoked?)."); }
    if (!res.ok) throw new Error(await errorText(res));
    busy(true, "answering…");
    await readEvents(res, (ev) => {
      if (ev.error) throw new Error(ev.error.message);
      if (ev.disclaimer) $("disclaimer").textContent = ev.disclaimer;
      const choice = ev.choices && ev.choices[0];
      const delta = choice && choice.delta;
      if (delta && delta.content) { reply += delta.content; out.textContent = reply; }
      // sm70 sends them with the finish_reason only
      if (choice && choice.finish_reason && Array.isArray(ev.citations) && ev.citations.length)
        citations(out.parentNode, ev.citations);
    });
    history.push({ role: "assistant", content: reply });
    busy(false, "");
  } catch (e) {
    if (reply) history.push({ role: "assistant", content: reply });
    else history.pop();
    busy(false, "");
    if (e.name !== "AbortError") bubble("error", String(e.message || e));
  } finally {
    controller = null;
  }
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("sm70-key", $("key").value.trim());
  $("key").value = "";
  connect();
});
$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
connect();
