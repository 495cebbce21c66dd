// Starts the API reference at /docs: Redoc (the vendored bundle the page
// loads before this file) renders the server's own /openapi.json. This lives
// in a file of its own so the page needs no inline script (see the
// Content-Security-Policy in src/dashboard/reference.rs).
"use strict";

(function () {
  var root = document.getElementById("reference");
  if (!root || typeof Redoc === "undefined") {
    return;
  }
  document.body.style.margin = "0";

  var fonts = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
  Redoc.init(
    "/openapi.json",
    {
      // Fonts already on the reader's machine: nothing is fetched for them.
      theme: {
        colors: { primary: { main: "#2458d6" } },
        typography: {
          fontFamily: fonts,
          headings: { fontFamily: fonts },
          code: { fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace' },
        },
      },
      expandResponses: "200,201",
      sortTagsAlphabetically: false,
    },
    root,
    function (error) {
      // The browser test waits for this attribute.
      root.setAttribute("data-state", error ? "error" : "ready");
    }
  );
})();
