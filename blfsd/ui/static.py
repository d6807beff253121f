"""The page's script and style, served by the ui server itself (no other origin: the
Content-Security-Policy allows only 'self')."""

# Every few seconds, while <main data-refresh="on">: fetch this page's <main> again as
# JSON ({"main": html, "refresh": bool}) and swap it in. The HTML was escaped by the
# server (pages.py); an error (the master gone) is shown as text, never as HTML.
SCRIPT = """\
"use strict";
(function () {
  const EVERY = 2000;
  const main = document.getElementById("main");
  const notice = document.getElementById("notice");
  function say(text, bad) {
    notice.textContent = text;
    notice.className = bad ? "bad" : "";
  }
  async function refresh() {
    if (!main || main.dataset.refresh !== "on") return;
    try {
      const reply = await fetch(location.pathname + "?part=main", {cache: "no-store"});
      if (reply.ok) {
        const page = await reply.json();
        main.innerHTML = page.main;
        main.dataset.refresh = page.refresh ? "on" : "off";
        say("updated " + new Date().toLocaleTimeString(), false);
      } else {
        say((await reply.text()).trim(), true);
      }
    } catch (err) {
      say("the ui server does not answer", true);
    }
    setTimeout(refresh, EVERY);
  }
  setTimeout(refresh, EVERY);
})();
"""

STYLE = """\
body { font-family: sans-serif; margin: 0; color: #222; }
nav { background: #2f3b4c; color: #fff; padding: 6px 12px; }
nav a { color: #cde; margin-right: 10px; }
#notice { float: right; font-size: 12px; color: #cde; }
#notice.bad { color: #ffb3b3; font-weight: bold; }
main { padding: 4px 16px 24px; }
h1 small, h2 small { color: #777; font-weight: normal; }
table { border-collapse: collapse; margin: 4px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
td pre, pre.error { margin: 0; white-space: pre-wrap; max-width: 70em; font-size: 12px; }
pre.error { background: #fff1f0; padding: 6px; }
.state.succeeded { color: #1a7f37; } .state.failed { color: #c62828; }
.state.running, .state.committing { color: #1f5fbf; } .state.cancelled { color: #777; }
.timeline { overflow-x: auto; border: 1px solid #eee; }
progress { width: 120px; }
.none { color: #777; }
"""
