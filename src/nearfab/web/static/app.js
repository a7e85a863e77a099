// Release-queue sign dialogs (no framework, nothing from a CDN).
document.addEventListener("click", (event) => {
  const opener = event.target.closest("button[data-dialog]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.dialog);
    dialog.showModal();
    const first = dialog.querySelector("input[name=meaning]");
    if (first) first.focus();
    return;
  }
  const closer = event.target.closest("dialog button.close");
  if (closer) closer.closest("dialog").close();
});

// The meaning follows the decision ("QP release" / "QP rejection") unless the QP typed one;
// the reason is required where the server would ask for it (reject, or against the proposal).
document.addEventListener("change", (event) => {
  const select = event.target.closest("dialog select[name=decision]");
  if (!select) return;
  const form = select.form;
  const meaning = form.elements.meaning;
  const defaults = { release: "QP release", reject: "QP rejection" };
  if (Object.values(defaults).includes(meaning.value)) meaning.value = defaults[select.value];
  form.elements.reason.required = select.value === "reject" || form.dataset.proposed !== select.value;
});

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("dialog form[data-proposed]")) {
    form.elements.reason.required = form.dataset.proposed !== form.elements.decision.value;
  }
});
