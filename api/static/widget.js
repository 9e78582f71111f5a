/* AIgentable website widget.
 * <script src="https://api.example.com/widget.js" data-key="pk_..." async></script>
 * Talks to /api/v1/widget/{key}/... and gets replies live over Socket.IO
 * (namespace /widget, spoken directly over a WebSocket: engine.io v4),
 * polling GET .../messages when the socket is unavailable. The bot's
 * reply is shown while it is written (message-delta), then replaced by the
 * stored message. */
(function () {
  "use strict";
  var me = document.currentScript || document.querySelector("script[data-key]");
  if (!me) return;
  var key = me.getAttribute("data-key");
  var base = (me.getAttribute("data-api") || new URL(me.src).origin).replace(/\/$/, "");
  var api = base + "/api/v1/widget/" + encodeURIComponent(key);
  var store = window.localStorage;
  var sk = "aigentable:" + key;
  var session = null, seen = {}, live = {}, pending = {}, joined = false, ws = null, pollTimer = null;

  function req(method, path, body) {
    var h = { "Content-Type": "application/json" };
    if (session) h.Authorization = "Bearer " + session.token;
    return fetch(api + path, { method: method, headers: h, body: body ? JSON.stringify(body) : undefined })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (r.status === 401 && session) { session = null; started = null; } // resumed with the stored token on the next open
          if (!r.ok) throw new Error(j.message || ("HTTP " + r.status));
          return j;
        });
      });
  }

  // ---- UI ----
  var root = document.createElement("div");
  root.style.cssText = "position:fixed;bottom:20px;right:20px;z-index:2147483000;font:14px/1.4 system-ui,sans-serif";
  var bubble = document.createElement("button");
  bubble.setAttribute("aria-label", "Chat");
  bubble.textContent = "\uD83D\uDCAC";
  bubble.style.cssText = "width:56px;height:56px;border-radius:50%;border:0;color:#fff;font-size:24px;cursor:pointer;box-shadow:0 2px 10px rgba(0,0,0,.25)";
  var panel = document.createElement("div");
  panel.style.cssText = "display:none;flex-direction:column;width:320px;height:440px;background:#fff;border-radius:12px;box-shadow:0 4px 24px rgba(0,0,0,.2);overflow:hidden;margin-bottom:10px";
  var head = document.createElement("div");
  head.style.cssText = "padding:12px;color:#fff;font-weight:600";
  var list = document.createElement("div");
  list.style.cssText = "flex:1;overflow-y:auto;padding:10px;background:#f7f7f8";
  var form = document.createElement("form");
  form.style.cssText = "display:flex;border-top:1px solid #eee";
  var input = document.createElement("input");
  input.placeholder = "Type a message\u2026";
  input.maxLength = 2000;
  input.style.cssText = "flex:1;border:0;padding:12px;outline:none;font:inherit";
  var send = document.createElement("button");
  send.textContent = "Send";
  send.style.cssText = "border:0;background:none;padding:0 14px;cursor:pointer;font:inherit;font-weight:600";
  form.appendChild(input); form.appendChild(send);
  panel.appendChild(head); panel.appendChild(list); panel.appendChild(form);
  root.appendChild(panel); root.appendChild(bubble);

  function theme(s) {
    var color = (s && s.theme && s.theme.color) || "#4f46e5";
    bubble.style.background = color; head.style.background = color; send.style.color = color;
    head.textContent = (s && s.title) || "Chat with us";
  }
  theme(null);

  function add(m) {
    if (!m || !m.id) return;
    // The reply was shown while it was written: the message replaces it.
    if (live[m.id]) { live[m.id].b.textContent = m.content; delete live[m.id]; seen[m.id] = true; return; }
    if (seen[m.id]) return;
    seen[m.id] = true;
    // Our own message coming back from the server: already on screen.
    if (m.from === "visitor" && pending[m.content]) { pending[m.content]--; if (!pending[m.content]) delete pending[m.content]; return; }
    var row = document.createElement("div");
    var mine = m.from === "visitor";
    row.style.cssText = "margin:6px 0;display:flex;justify-content:" + (mine ? "flex-end" : "flex-start");
    var b = document.createElement("div");
    b.textContent = m.content;
    b.style.cssText = "max-width:80%;padding:8px 10px;border-radius:10px;white-space:pre-wrap;word-wrap:break-word;" +
      (mine ? "background:" + head.style.background + ";color:#fff" : "background:#fff;border:1px solid #e5e5e5");
    row.appendChild(b); list.appendChild(row);
    list.scrollTop = list.scrollHeight;
    return { row: row, b: b };
  }

  // A reply as it is written: {messageId, delta, index[, dropped]}.
  function delta(d) {
    if (!d || !d.messageId) return;
    var l = live[d.messageId];
    if (d.dropped) { if (l) { list.removeChild(l.row); delete live[d.messageId]; delete seen[d.messageId]; } return; }
    if (!l) {
      if (seen[d.messageId]) return; // already stored and shown whole
      l = add({ id: d.messageId, from: "bot", content: "" });
      if (!l) return;
      live[d.messageId] = l;
    }
    l.b.textContent += d.delta;
    list.scrollTop = list.scrollHeight;
  }

  function poll() {
    if (!session) return;
    req("GET", "/messages").then(function (r) { (r.messages || []).forEach(add); if (r.conversationId) join(); }).catch(function () {});
  }

  // ---- Socket.IO (engine.io v4 over WebSocket) ----
  var ackId = 0, joinTries = 0, sentAny = false;
  function sendPacket(p) { if (ws && ws.readyState === 1) ws.send(p); }
  function join() {
    if (joined || !ws || ws.readyState !== 1) return;
    sendPacket("42/widget," + (++ackId) + JSON.stringify(["join"]));
  }
  function connect() {
    if (!session || !window.WebSocket) return;
    var url = base.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
    ws = new WebSocket(url);
    ws.onmessage = function (e) {
      var d = String(e.data);
      if (d === "2") { sendPacket("3"); return; }
      if (d.charAt(0) === "0") { sendPacket("40/widget," + JSON.stringify({ token: session.token })); return; }
      if (d.indexOf("40/widget") === 0) { join(); return; }
      if (d.indexOf("44/widget") === 0) { ws.close(); return; }
      if (d.indexOf("43/widget,") === 0) {
        var ack = JSON.parse(d.slice(d.indexOf("[")));
        if (ack[0] && ack[0].ok) { joined = true; joinTries = 0; if (pollTimer) { clearInterval(pollTimer); pollTimer = null; } }
        // The conversation is created when the first message is processed:
        // keep polling and try again for a while.
        else if (sentAny && ++joinTries < 20) setTimeout(function () { poll(); join(); }, 2000);
        return;
      }
      if (d.indexOf("42/widget,") === 0) {
        var ev = JSON.parse(d.slice(d.indexOf("[")));
        if (ev[0] === "new-message") add(ev[1]);
        else if (ev[0] === "message-delta") delta(ev[1]);
      }
    };
    ws.onclose = function () {
      joined = false; ws = null;
      if (!pollTimer) pollTimer = setInterval(poll, 4000);
      setTimeout(connect, 5000);
    };
  }

  function start() {
    var body = {};
    // The earlier token proves who we were; the server issues the id.
    var prev = store.getItem(sk + ":token");
    if (prev) body.visitorToken = prev;
    return req("POST", "/sessions", body).then(function (s) {
      session = s;
      store.setItem(sk + ":token", s.token);
      theme(s.settings);
      if (s.settings && s.settings.welcomeMessage && !list.childNodes.length) {
        add({ id: "welcome", from: "bot", content: s.settings.welcomeMessage });
      }
      poll(); connect();
    });
  }

  var started = null;
  bubble.onclick = function () {
    var open = panel.style.display !== "flex";
    panel.style.display = open ? "flex" : "none";
    if (open && !started) started = start().catch(function (e) { add({ id: "err" + Date.now(), from: "bot", content: e.message }); started = null; });
    if (open) input.focus();
  };
  form.onsubmit = function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || !session) return;
    input.value = "";
    var cid = "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
    add({ id: "local-" + cid, from: "visitor", content: text });
    pending[text] = (pending[text] || 0) + 1;
    sentAny = true; joinTries = 0;
    req("POST", "/messages", { text: text, clientMessageId: cid })
      .then(function () { setTimeout(function () { if (!joined) { poll(); join(); } }, 1500); })
      .catch(function (err) { add({ id: "err" + cid, from: "bot", content: err.message }); });
  };

  if (document.body) document.body.appendChild(root);
  else document.addEventListener("DOMContentLoaded", function () { document.body.appendChild(root); });
})();
