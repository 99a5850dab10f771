/* Settings page behaviour: copy buttons, the live WhatsApp status, and a busy note while a form
   waits for Meta.
   No inline scripts: a strict Content-Security-Policy (default-src 'self') applies.
   Every text comes from the page (data-* attributes rendered by Django in the user's language). */
(function () {
  "use strict";

  var FINAL = ["active", "failed", "disconnected"];
  var POLL_MS = 3000;

  function announce(text) {
    var region = document.getElementById("copy-status");
    if (!region) { return; }
    region.textContent = "";
    window.setTimeout(function () { region.textContent = text; }, 50);
  }

  function copyWithSelection(text) {
    // Plain-HTTP servers (no Clipboard API) or a refused permission: select and copy.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } finally { document.body.removeChild(area); }
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { copyWithSelection(text); });
    }
    copyWithSelection(text);
    return Promise.resolve();
  }

  function setUpCopyButtons() {
    var buttons = document.querySelectorAll("button[data-copy]");
    Array.prototype.forEach.call(buttons, function (button) {
      button.addEventListener("click", function () {
        var source = document.getElementById(button.getAttribute("data-copy"));
        if (!source) { return; }
        copyText(source.textContent.trim()).then(function () {
          announce(button.getAttribute("data-copied") || "");
        });
      });
    });
  }

  function setUpStatusPolling() {
    var box = document.getElementById("wa-status");
    if (!box || !box.getAttribute("data-poll-url")) { return; }
    var url = box.getAttribute("data-poll-url");
    var badge = document.getElementById("wa-status-badge");
    var number = document.getElementById("wa-status-number");
    var detail = document.getElementById("wa-status-detail");
    var shown = box.getAttribute("data-status");

    function render(data) {
      if (data.status !== shown) {
        badge.className = "badge badge--" + data.status;
        badge.textContent = box.getAttribute("data-label-" + data.status) || data.status;
      }
      number.textContent = data.number || "";
      detail.textContent = data.detail || "";
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.json();
        })
        .then(function (data) {
          var changed = data.status !== shown;
          render(data);
          if (FINAL.indexOf(data.status) !== -1) {
            // The next step's forms depend on the status: show them.
            if (changed) { window.setTimeout(function () { window.location.reload(); }, 1500); }
            return;
          }
          shown = data.status;
          box.setAttribute("data-status", shown);
          window.setTimeout(poll, POLL_MS);
        })
        .catch(function () {
          // Signed out or the server is restarting: a reload shows the state.
          window.setTimeout(poll, POLL_MS * 3);
        });
    }

    window.setTimeout(poll, POLL_MS);
  }

  // A form that asks Meta (data-busy) can wait up to the request deadline: its buttons are
  // disabled and a note says why, so nobody clicks again. Without JavaScript the form still posts.
  function setUpBusyForms() {
    var main = document.getElementById("main");
    var text = main ? main.getAttribute("data-busy-text") : "";
    var forms = document.querySelectorAll("form[data-busy]");
    Array.prototype.forEach.call(forms, function (form) {
      form.addEventListener("submit", function (event) {
        if (form.getAttribute("aria-busy") === "true") { event.preventDefault(); return; }
        var submitter = event.submitter;
        if (submitter && submitter.name) {
          // A disabled button is not sent: keep the value it carries (e.g. SMS or voice).
          var carried = document.createElement("input");
          carried.type = "hidden";
          carried.name = submitter.name;
          carried.value = submitter.value;
          form.appendChild(carried);
        }
        form.setAttribute("aria-busy", "true");
        Array.prototype.forEach.call(form.querySelectorAll("button"), function (button) {
          button.disabled = true;
        });
        var note = document.createElement("p");
        note.className = "busy-note";
        note.setAttribute("role", "status");
        note.textContent = text;
        form.appendChild(note);
      });
    });
    // Back to a page the browser kept in memory: the buttons work again.
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) { return; }
      Array.prototype.forEach.call(forms, function (form) {
        form.removeAttribute("aria-busy");
        Array.prototype.forEach.call(form.querySelectorAll("button"), function (button) { button.disabled = false; });
        Array.prototype.forEach.call(form.querySelectorAll(".busy-note"), function (note) { note.remove(); });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpCopyButtons();
    setUpStatusPolling();
    setUpBusyForms();
  });
}());
