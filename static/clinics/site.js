/* Settings page behaviour: copy buttons and the live WhatsApp status.
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

  document.addEventListener("DOMContentLoaded", function () {
    setUpCopyButtons();
    setUpStatusPolling();
  });
}());
