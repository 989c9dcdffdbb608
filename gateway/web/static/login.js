// The one-time link's page: its token (the URL's fragment, never sent in a request line) is
// posted once for the session cookie, then the terminal page opens. Served by
// gateway/web/terminal.py.
"use strict";
(async () => {
  const status = document.getElementById("status");
  const token = location.hash.slice(1);
  // The token leaves the address bar and the history at once.
  history.replaceState(null, "", location.pathname);
  const fail = (message) => {
    status.textContent = message;
    status.className = "error";
  };
  if (!token) {
    fail("This page opens a link that 'ssh USER@gw web CONTAINER' prints.");
    return;
  }
  let resp;
  try {
    resp = await fetch("/web/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
      credentials: "same-origin",
    });
  } catch (e) {
    fail("The gateway cannot be reached.");
    return;
  }
  if (resp.ok) {
    location.replace("/web/");
    return;
  }
  let message = `The link was refused (${resp.status}).`;
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (e) {
    // not JSON: keep the status line
  }
  fail(message);
})();
