// The prescription form: show the dose units, body weight, course and the family's own fields
// the chosen medicine's product family asks for (the page lists them per medicine:
// orders/form.py), with the choices of the chosen medicine's envelope.
(function () {
  "use strict";
  var medicine = document.getElementById("medicine");
  var unit = document.getElementById("dose_unit");
  if (!medicine || !unit) { return; }
  function show(selector, on) {
    document.querySelectorAll(selector).forEach(function (el) {
      el.hidden = !on;
      el.style.display = on ? "" : "none";
      el.querySelectorAll("input, select").forEach(function (i) { i.disabled = !on; });
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
    // the family's own fields: the fieldset when any is asked for, then each field (enabled
    // only when asked for, so a hidden one is never sent) and its choices for this medicine
    var extras = document.querySelectorAll(".needs-extra");
    function wants(el) {
      return (el.getAttribute("data-medicines") || "").split("|").indexOf(code) >= 0;
    }
    show(".needs-extras", Array.prototype.some.call(extras, wants));
    extras.forEach(function (el) {
      var wanted = wants(el);
      el.hidden = !wanted;
      el.style.display = wanted ? "" : "none";
      el.querySelectorAll("input, select").forEach(function (i) { i.disabled = !wanted; });
      el.querySelectorAll("select.extra-choices").forEach(function (sel) {
        var pick = null;
        Array.prototype.forEach.call(sel.options, function (o) {
          var mine = o.getAttribute("data-medicine") === code;
          o.hidden = !mine; o.disabled = !mine;
          if (mine && pick === null) { pick = o; }
        });
        var now = sel.options[sel.selectedIndex];
        if (pick && (!now || now.disabled)) { pick.selected = true; }
      });
    });
  }
  medicine.addEventListener("change", update);
  update();
})();
