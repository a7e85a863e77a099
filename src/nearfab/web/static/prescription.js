// The prescription form: show the dose units, body weight and course fields the chosen
// medicine's product family asks for (the page lists them per medicine: orders/form.py).
(function () {
  "use strict";
  var medicine = document.getElementById("medicine");
  var unit = document.getElementById("dose_unit");
  if (!medicine || !unit) { return; }
  function show(selector, on) {
    document.querySelectorAll(selector).forEach(function (el) {
      el.hidden = !on;
      el.style.display = on ? "" : "none";
      el.querySelectorAll("input").forEach(function (i) { i.disabled = !on; });
    });
  }
  function update() {
    var chosen = medicine.options[medicine.selectedIndex];
    var code = chosen ? chosen.value : "";
    var first = null;
    Array.prototype.forEach.call(unit.options, function (o) {
      var mine = o.getAttribute("data-medicine") === code;
      o.hidden = !mine; o.disabled = !mine;
      if (mine && first === null) { first = o; }
    });
    var current = unit.options[unit.selectedIndex];
    if (first && (!current || current.disabled)) { first.selected = true; }
    show(".needs-weight", !code || chosen.getAttribute("data-weight") === "1");
    show(".needs-course", !code || chosen.getAttribute("data-course") === "1");
  }
  medicine.addEventListener("change", update);
  update();
})();
