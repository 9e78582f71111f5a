// Usage: node widget_check.mjs <baseUrl> <publicKey> <expectedReply>
// Runs the widget script the api serves, unchanged, on a minimal DOM (the
// few element operations it uses) with a real WebSocket (`ws`, which
// socket.io-client brings), opens it, writes twice and records what the
// visitor's screen shows while the second reply is written. Prints one
// JSON object: the bot bubbles' texts at the end, and every distinct text
// the last bot bubble showed, in order.
import { WebSocket } from "ws";

const [base, key, expected] = process.argv.slice(2);

class Element {
  constructor(tag) {
    this.tagName = tag;
    this.childNodes = [];
    this.style = {};
    this.attributes = {};
    this.textContent = "";
    this.value = "";
    this.scrollTop = 0;
    this.scrollHeight = 0;
  }
  appendChild(child) { this.childNodes.push(child); return child; }
  removeChild(child) { this.childNodes = this.childNodes.filter((c) => c !== child); return child; }
  setAttribute(k, v) { this.attributes[k] = String(v); }
  getAttribute(k) { return k in this.attributes ? this.attributes[k] : null; }
  focus() {}
}

const script = new Element("script");
script.setAttribute("data-key", key);
script.src = `${base}/widget.js`;
const body = new Element("body");
const storage = new Map();
let joinedAt = 0;
class SpiedSocket extends WebSocket {
  constructor(url) {
    super(url);
    this.addEventListener("message", (e) => {
      const d = String(e.data);
      if (d.startsWith("43/widget,") && d.includes('"ok":true')) joinedAt = Date.now();
    });
  }
}
globalThis.WebSocket = SpiedSocket;
globalThis.document = {
  currentScript: script,
  body,
  createElement: (tag) => new Element(tag),
  querySelector: () => script,
  addEventListener: () => {},
};
globalThis.window = {
  WebSocket: SpiedSocket,
  localStorage: { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, String(v)) },
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, test, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = test();
    if (v) return v;
    await sleep(2);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const code = await (await fetch(`${base}/widget.js`)).text();
new Function(code)();

const root = body.childNodes[0];
const [panel, bubble] = root.childNodes;
const list = panel.childNodes[1];
const form = panel.childNodes[2];
const input = form.childNodes[0];
const botBubbles = () =>
  list.childNodes
    .map((row) => row.childNodes[0])
    .filter((b) => b && !String(b.style.cssText).includes("color:#fff"));
const send = (text) => { input.value = text; form.onsubmit({ preventDefault() {} }); };

bubble.onclick();
// The first message creates the conversation; its reply comes by polling
// and the script then joins the conversation's room.
await sleep(500);
send("hello");
await until("the first reply", () => botBubbles().length >= 1, 30000);
await until("the widget to join its conversation", () => joinedAt, 30000);

const before = botBubbles().length;
send("tell me everything");
const seen = [];
const last = await until("the streamed reply", () => {
  const bots = botBubbles();
  if (bots.length <= before) return null;
  const text = bots[bots.length - 1].textContent;
  if (seen[seen.length - 1] !== text) seen.push(text);
  return text === expected ? text : null;
}, 60000);
// Let the stored message arrive and replace the streamed text.
await sleep(1000);
const bots = botBubbles();
console.log(JSON.stringify({ texts: bots.map((b) => b.textContent), seen, last }));
process.exit(0);
