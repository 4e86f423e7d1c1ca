// The run page follows its run: the server sends the page's <main> again, rendered
// from the journal, each time the journal grows (server-sent events, no polling here).
(function () {
  var main = document.getElementById("run");
  if (!main || !window.EventSource) return;
  var count = 0;
  var source = new EventSource(location.pathname.replace(/\/$/, "") + "/events");
  source.addEventListener("update", function (e) {
    main.innerHTML = e.data;
    count += 1;
    document.body.setAttribute("data-updates", String(count));
  });
  source.addEventListener("error", function () {
    document.body.setAttribute("data-stream", "reconnecting");
  });
  source.addEventListener("open", function () {
    document.body.setAttribute("data-stream", "open");
  });
})();
