// Notifly dashboard: small enhancements only. Every action works without
// this script; it adds copy buttons and a live refresh of the deliveries list.
"use strict";

(function () {
  // Copy buttons: shown only when the clipboard can be used.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target || !navigator.clipboard) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(target.textContent.trim()).then(
        function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 2000);
        },
        function () {
          button.textContent = "Select and copy";
        }
      );
    });
  });

  // "All events" makes the single types moot: grey them out.
  var all = document.getElementById("all-events");
  if (all) {
    var sync = function () {
      document.querySelectorAll(".groups input[type=checkbox]").forEach(function (box) {
        box.disabled = all.checked;
      });
    };
    all.addEventListener("change", sync);
    sync();
  }

  // Live refresh: re-read this page and swap in its deliveries list.
  var live = document.querySelector("[data-live-refresh]");
  if (live && window.fetch && window.DOMParser) {
    var every = parseInt(live.getAttribute("data-live-refresh"), 10) || 5000;
    var note = document.createElement("p");
    note.className = "hint live-note";
    note.textContent = "Updates every " + Math.round(every / 1000) + " s.";
    live.parentNode.insertBefore(note, live);
    var refresh = function () {
      if (document.hidden) {
        return;
      }
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (res) {
          if (!res.ok || res.redirected) {
            throw new Error("status " + res.status);
          }
          return res.text();
        })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById(live.id);
          if (fresh) {
            live.replaceChildren.apply(live, Array.from(fresh.childNodes));
          }
          // A webhook's replays show their progress too.
          var replays = document.getElementById("replays-body");
          var freshReplays = doc.getElementById("replays-body");
          if (replays && freshReplays) {
            replays.replaceChildren.apply(replays, Array.from(freshReplays.childNodes));
          }
        })
        .catch(function () {
          note.textContent = "Live updates paused; reload the page.";
          clearInterval(timer);
        });
    };
    var timer = setInterval(refresh, every);
  }
})();
