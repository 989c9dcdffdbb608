// The terminal page: xterm.js and a WebSocket to /web/ws (gateway/web/terminal.py). Binary
// frames carry terminal bytes both ways; JSON text frames carry the rest: {"type": "resize",
// "cols", "rows"} from here, {"type": "exit", "status"} and {"type": "error", "message"} from
// the gateway.
"use strict";

// xterm.js styles its rows with <style> elements, which this page's Content-Security-Policy
// (style-src 'self') refuses; their text goes into constructed style sheets instead, which
// the policy allows (no inline style is needed, and none is allowed).
(() => {
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function (name, options) {
    const el = create.call(this, name, options);
    if (String(name).toLowerCase() !== "style") return el;
    const sheet = new CSSStyleSheet();
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    const text = {
      configurable: true,
      get() { return ""; },
      set(value) { sheet.replaceSync(String(value)); },
    };
    Object.defineProperty(el, "textContent", text);
    Object.defineProperty(el, "innerText", text);
    return el;
  };
})();

(() => {
  const status = document.getElementById("status");
  const term = new Terminal({ cursorBlink: true, fontSize: 15, scrollback: 5000 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("terminal"));
  fit.fit();

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(
    `${scheme}//${location.host}/web/ws?cols=${term.cols}&rows=${term.rows}`);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  let opened = false;
  let ended = false;

  const end = (text, kind) => {
    if (ended) return;
    ended = true;
    status.textContent = text;
    status.className = kind;
    document.body.dataset.state = "ended";
    term.options.cursorBlink = false;
  };
  const send = (data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(data);
  };

  ws.onopen = () => {
    opened = true;
    status.textContent = "connected";
    document.body.dataset.state = "open";
    term.focus();
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") {
      term.write(new Uint8Array(ev.data));
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    if (msg.type === "exit") end(`session ended (exit status ${msg.status})`, "ended");
    else if (msg.type === "error") end(`session ended: ${msg.message}`, "error");
  };
  ws.onclose = () => {
    if (opened) end("session ended (connection closed)", "ended");
    else end("The terminal could not be opened: the link was used or has expired, or access " +
             "was refused. Open a new link: ssh USER@gw web CONTAINER", "error");
  };

  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
  term.onResize(({ cols, rows }) => send(JSON.stringify({ type: "resize", cols, rows })));
  window.addEventListener("resize", () => fit.fit());
})();
