// The transcript grows as windows finish: server-sent events from /now/events.
"use strict";
(function () {
  const list = document.getElementById("lines");
  if (!list || !window.EventSource) { return; }
  const source = new EventSource("/now/events?after=" + list.children.length);
  source.addEventListener("line", function (event) {
    const line = JSON.parse(event.data);
    const item = document.createElement("li");
    const at = document.createElement("span");
    at.className = "at";
    at.textContent = line.at;
    item.append(at, " ");
    if (line.speaker) {
      const speaker = document.createElement("span");
      speaker.className = "speaker";
      speaker.textContent = line.speaker + ":";
      item.append(speaker, " ");
    }
    item.append(line.text);
    list.append(item);
  });
  source.addEventListener("state", function (event) {
    const state = JSON.parse(event.data);
    document.getElementById("state").textContent = state.state;
    if (state.state === "recording") {
      document.getElementById("elapsed").textContent = state.elapsed;
    }
  });
  source.addEventListener("end", function () { source.close(); });
})();
