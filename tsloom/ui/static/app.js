// tsloom UI: draws every [data-chart] element with uPlot, on page load and after each
// htmx swap. A chart's data is JSON in its data-chart attribute (see tsloom/ui/charts.py):
// {x: [...], time: bool, series: [{label, values, color, points}], ylabel, xlabel}.
(function () {
  "use strict";

  function build(el) {
    var spec;
    try {
      spec = JSON.parse(el.getAttribute("data-chart"));
    } catch (err) {
      el.textContent = "chart data could not be read: " + err;
      return;
    }
    if (el._plot) { el._plot.destroy(); el._plot = null; }
    el.innerHTML = "";
    if (!spec.x || !spec.x.length) {
      var p = document.createElement("p");
      p.className = "empty";
      p.textContent = el.getAttribute("data-empty") || "nothing to draw yet";
      el.appendChild(p);
      return;
    }
    var width = Math.max(320, el.clientWidth || (el.parentNode && el.parentNode.clientWidth) || 900);
    var height = parseInt(el.getAttribute("data-height") || "280", 10);
    var series = [{ label: spec.time ? "time (UTC)" : (spec.xlabel || "x") }];
    var data = [spec.x];
    spec.series.forEach(function (s) {
      var opt = { label: s.label, stroke: s.color, width: 1.5 };
      if (s.points) {
        opt.paths = function () { return null; };
        opt.points = { show: true, size: 8, stroke: s.color, fill: s.color };
      }
      if (s.dash) { opt.dash = [6, 4]; }
      series.push(opt);
      data.push(s.values);
    });
    var opts = {
      width: width,
      height: height,
      series: series,
      scales: { x: { time: !!spec.time } },
      axes: [
        { label: spec.time ? undefined : (spec.xlabel || undefined) },
        { label: spec.ylabel || undefined, size: 64 }
      ],
      legend: { live: true }
    };
    if (spec.time) {
      opts.tzDate = function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); };
    }
    el._plot = new uPlot(opts, data, el);
    el.setAttribute("data-rendered", String(spec.x.length));
  }

  function scan(root) {
    if (!root || !root.querySelectorAll) { return; }
    if (root.hasAttribute && root.hasAttribute("data-chart")) { build(root); }
    root.querySelectorAll("[data-chart]").forEach(build);
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      document.querySelectorAll("[data-chart]").forEach(function (el) {
        if (el._plot) {
          el._plot.setSize({ width: Math.max(320, el.clientWidth), height: el._plot.height });
        }
      });
    }, 150);
  });

  htmx.onLoad(scan);
})();
