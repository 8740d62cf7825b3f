// Draw every chart of the page: each .portal-chart names the JSON block holding its plotly figure.
// (No inline script in the pages: the Content-Security-Policy allows scripts from the portal only.)
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".portal-chart").forEach(function (div) {
    var data = document.getElementById(div.dataset.figure);
    if (!data || !window.Plotly) { return; }
    var figure = JSON.parse(data.textContent);
    Plotly.newPlot(div, figure.data, figure.layout, {displaylogo: false, responsive: true});
    div.dataset.drawn = "yes";
  });
});
