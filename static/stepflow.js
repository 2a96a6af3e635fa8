// stepflow: small progressive enhancements (the pages work without them).
// Loaded with the CSP nonce; no inline handlers anywhere.
(function () {
  "use strict";

  var FOCUSABLE = 'a[href], button:not([disabled]), input:not([type="hidden"]):not([disabled]), select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex="-1"])';

  function panelSlot() { return document.getElementById("action-panel"); }

  function closePanel() {
    var slot = panelSlot();
    if (!slot) return;
    var origin = slot.dataset.returnFocus;
    slot.innerHTML = "";
    delete slot.dataset.returnFocus;
    var btn = origin && document.querySelector('[data-action="' + origin + '"]');
    if (btn) btn.focus();
  }

  // Copy buttons: data-copy holds the text.
  document.addEventListener("click", function (event) {
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      event.preventDefault();
      var text = copy.getAttribute("data-copy");
      var done = function () {
        var old = copy.textContent;
        copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = old; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {});
      } else {
        var area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        try { document.execCommand("copy"); done(); } catch (e) { /* ignore */ }
        area.remove();
      }
      return;
    }
    var close = event.target.closest("[data-close]");
    if (close && panelSlot() && panelSlot().contains(close)) {
      event.preventDefault();
      closePanel();
    }
    var action = event.target.closest("[data-action]");
    if (action && panelSlot()) {
      panelSlot().dataset.returnFocus = action.getAttribute("data-action");
    }
  });

  // The confirm panel keeps the focus until it is closed (Escape closes it).
  document.addEventListener("keydown", function (event) {
    var slot = panelSlot();
    if (!slot || !slot.firstElementChild) return;
    if (!slot.contains(document.activeElement)) return;
    if (event.key === "Escape") {
      event.preventDefault();
      closePanel();
      return;
    }
    if (event.key !== "Tab") return;
    var items = Array.prototype.filter.call(slot.querySelectorAll(FOCUSABLE), function (el) {
      return el.offsetParent !== null;
    });
    if (!items.length) return;
    var first = items[0], last = items[items.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var slot = panelSlot();
    if (!slot || event.detail.target !== slot) return;
    var target = slot.querySelector("[data-confirm]:not([disabled]), select, input:not([type=hidden]), [data-close]");
    if (target) target.focus();
  });
})();
