// Choosing a line plays the recording from the line's start. Without JavaScript the line's
// link opens the recording at that time (a media fragment) instead.
"use strict";
(function () {
  const player = document.getElementById("player");
  const list = document.getElementById("lines");
  if (!player || !list) { return; }
  list.addEventListener("click", function (event) {
    const line = event.target.closest("a[data-start]");
    if (!line) { return; }
    event.preventDefault();
    player.currentTime = Number(line.dataset.start);
    player.play().catch(function () { /* the browser refused to play: the seek stands */ });
  });
})();
