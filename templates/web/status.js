// Live status page: listen for server-sent "update" events and swap in the new live part.
// Without JavaScript the page refreshes itself (a <noscript> meta refresh); with it, no reload.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource) { return; }
  var mark = live.getAttribute("data-mark") || "";
  var source = new EventSource("/events?since=" + encodeURIComponent(mark));
  source.addEventListener("update", function (event) {
    var next = document.createElement("main");
    next.innerHTML = event.data;
    live.innerHTML = next.innerHTML;
    live.setAttribute("data-mark", event.lastEventId);
    var note = document.getElementById("live-note");
    if (note) { note.textContent = "Live: updated " + new Date().toLocaleTimeString() + "."; }
  });
})();
