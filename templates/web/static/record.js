// Record in the browser (MediaRecorder) where the page is a secure context with a microphone;
// the recording goes through the same upload form, in place of a chosen file.
"use strict";
(function () {
  const form = document.getElementById("upload");
  const box = document.getElementById("recorder");
  if (!form || !box) { return; }
  const note = document.getElementById("recorder-note");
  const start = document.getElementById("record-start");
  const stop = document.getElementById("record-stop");
  const state = document.getElementById("record-state");
  const file = document.getElementById("audio");
  if (!window.isSecureContext || !navigator.mediaDevices || !window.MediaRecorder) {
    note.textContent = "Recording here is not possible: the page is not opened securely " +
      "(https, or on the box itself), or this browser cannot record.";
    return;
  }
  box.disabled = false;
  note.textContent = "Record from this device's microphone; the recording is uploaded " +
    "with this form instead of a file.";
  stop.disabled = true;
  let recorder = null;
  let recording = null;
  let began = 0;
  let ticker = 0;

  start.addEventListener("click", async function () {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      state.textContent = "No microphone: " + error.message;
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", function (event) { chunks.push(event.data); });
    recorder.addEventListener("stop", function () {
      stream.getTracks().forEach(function (track) { track.stop(); });
      recording = new Blob(chunks, { type: recorder.mimeType });
      file.required = false;
      state.textContent = "Recorded " + Math.round((Date.now() - began) / 1000) +
        " s; it is uploaded with the form.";
    });
    recorder.start(1000);
    began = Date.now();
    start.disabled = true;
    stop.disabled = false;
    stop.focus();
    state.textContent = "Recording…";
    ticker = setInterval(function () {
      state.textContent = "Recording… " + Math.round((Date.now() - began) / 1000) + " s";
    }, 1000);
  });

  stop.addEventListener("click", function () {
    clearInterval(ticker);
    recorder.stop();
    start.disabled = false;
    stop.disabled = true;
    start.focus();
  });

  form.addEventListener("submit", async function (event) {
    if (!recording || file.files.length) { return; }
    event.preventDefault();
    const data = new FormData(form);
    const kind = recording.type.indexOf("mp4") >= 0 ? "m4a" : "webm";
    data.set("audio", recording, "browser recording." + kind);
    state.textContent = "Uploading…";
    try {
      const answer = await fetch(form.action, { method: "POST", body: data });
      window.location.assign(answer.url);
    } catch (error) {
      state.textContent = "The upload failed: " + error.message;
    }
  });
})();
